"""Defense submissions: the shipped AOL example (an ONNX graph rsbench certifies) validates and earns its tracks,
which check derives again; what a cheater would try (claims, names, certificates larger than rsbench computes, a
self-certified plugin with inflated radii and a gradient that is not its forward's, code that patches rsbench,
forged records) is refused.

The verified tests share one verified copy of the example under a one-sample protocol and a short suite (the
standard one is the first 20 samples; timings of the full one are in CONTRIBUTING.md). A test that needs
bubblewrap fails on CI (CI=1) and skips elsewhere.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
import yaml

import rsbench
from rsbench import registry, user_code
from rsbench.defenses.smoothing import Smoothing
from rsbench.errors import RsbenchError
from rsbench.gate import audit
from rsbench.leaderboard import rederive, site, track_files
from rsbench.leaderboard.scoring import comparison, entry_metrics
from rsbench.submissions import attack_submissions, defense_submissions, defense_tracks, sandbox, soundness, tensor_pipe
from rsbench.submissions.submission_spec import content_sha256

EXAMPLE = Path(__file__).resolve().parents[1] / "submissions" / "defenses" / "aol-digits-graph"
TRACKS = ["degradation-aol-digits-graph", "evasion-aol-digits-graph", "spoofing-aol-digits-graph"]
PATCHES = '''
import rsbench.attacks.bounded_pgd, rsbench.submissions.soundness, rsbench.leaderboard.verdicts
from pathlib import Path

# Code that runs when the defense is imported, trying to make every attack find nothing, every example fail its
# verdict, the soundness check pass, and to leave a module in the harness package.
rsbench.attacks.bounded_pgd.BoundedPGD.run = lambda self, *args, **kwargs: None
rsbench.submissions.soundness.check = lambda spec, *args, **kwargs: rsbench.submissions.soundness.Report(0, 0, "patched")
rsbench.leaderboard.verdicts.admitted = lambda *args, **kwargs: False
try:
    (Path(rsbench.__file__).parent / "planted.py").write_text("PLANTED = True")
except OSError:
    pass
'''


QUICK_SUITE = {"evasion": {"l2": ("pgd-l2",)}, "degradation": {"l2": ("degradation-pgd", "degradation-adaptive")},
               "spoofing": {"l2": ("shadow-1ch",)}}
"""A short suite for the shared verified copy: one attack per goal that the graph runs in rsbench's process."""


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args], check=True,
                   capture_output=True)


@pytest.fixture(scope="module")
def verified(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[str]]]:
    """A checkout whose base commit holds the example and no leaderboards, after `submission verify` of the example
    under a one-sample protocol: (the checkout, verify's lines)."""
    reason = sandbox.unavailable()
    if reason and os.environ.get("CI"):
        pytest.fail(f"CI must test the sandbox (.ci/run installs bubblewrap): {reason}")
    if reason:
        pytest.skip(reason)
    repo = tmp_path_factory.mktemp("checkout")
    shutil.copytree(EXAMPLE, repo / "submissions" / "defenses" / "aol-digits-graph")
    (repo / "leaderboards").mkdir()
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "base")
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(defense_submissions.TRACK_PROTOCOL, "num_samples", 1)
        patch.setattr(defense_tracks, "SUITE", QUICK_SUITE)
        lines = attack_submissions.verify(repo / "submissions" / "defenses" / "aol-digits-graph", repo / "leaderboards",
                                   timeout=300)
    yield repo, lines


def copy_of(verified: tuple[Path, list[str]], tmp_path: Path) -> Path:
    shutil.copytree(verified[0], tmp_path / "checkout")
    return tmp_path / "checkout"


@pytest.mark.slow  # a sandboxed process that imports torch, and the whole suite on one sample, twice
def test_the_aol_example_earns_its_tracks_and_check_derives_them_again(verified: tuple[Path, list[str]],
                                                                        tmp_path: Path) -> None:
    repo, lines = verified
    assert lines[0].startswith("aol-digits-graph: schema, names, files and weights")
    assert lines[0].endswith("an ONNX graph that rsbench certifies, attacks and judges in its own process; no "
                             "submitted code runs")
    assert [line.split(":")[0] for line in lines[1:4]] == ["evasion-aol-digits-graph", "degradation-aol-digits-graph",
                                                          "spoofing-aol-digits-graph"]
    assert "clean accuracy 95% in [" in lines[1]
    assert "soundness on the first 1 test samples (noise seed" in lines[4] and "by pgd-l2, square-l2: no label changed" in lines[4]
    assert lines[5].startswith("evasion-aol-digits-graph: pgd-l2 success 0, r50 -; entries added to")
    assert lines[6].startswith("degradation-aol-digits-graph: degradation-pgd fpr_lower 100; degradation-adaptive "
                               "fpr_lower 100; entries added")
    root = repo / "leaderboards"
    boards = [track_files.load(path) for path in track_files.files(root)]
    assert [b.track for b in boards] == TRACKS
    digest = content_sha256(repo / "submissions" / "defenses" / "aol-digits-graph")
    for board in boards:
        assert board.defense.spec_hash() == defense_submissions.load(EXAMPLE).defense.spec_hash()
        for entry in board.entries:
            assert (entry.source.kind, entry.source.submission, entry.source.content_sha256) == \
                   ("defense-submission", "aol-digits-graph", digest)
            assert entry.judging is not None and entry.self_reported == [] and entry.seed != board.protocol.seed
    for board in boards[:2]:  # degradation, evasion: the graph answers alike in every process
        path = root / board.track / "v1.json"
        here = board.model_copy(update={"defense": defense_submissions.load(EXAMPLE).defense})
        clean, records = track_files.stored_records(path.parent, board)
        for entry in board.entries:
            again, _, _ = defense_tracks.judged_run(here, clean, entry.attack, entry.seed, entry.judging.seed,
                                                    tmp_path / board.track)
            assert [rederive.differing(a.model_dump(), b.model_dump())
                    for a, b in zip(records[entry.name], again)] == [None] * len(again)
    checked = audit.check(root, "HEAD")
    assert len(checked.new) == 4 and not checked.verification.refuted()
    with pytest.raises(RsbenchError, match="added by the trusted job"):
        audit.check(root, "HEAD", pull_request=True)
    site.render(root)
    page = (root / "site" / "defense-aol-digits-graph.html").read_text()
    assert "evasion-aol-digits-graph" in page and "degradation-aol-digits-graph" in page


def forge_failure(root: Path, track: str, name: str) -> None:
    """Turn every success of an entry into a failure, as its defense's author would, and make its file consistent:
    records, their sha256, the examples dropped, metrics and comparison recomputed."""
    path = root / track / "v1.json"
    board = track_files.load(path)
    clean, records = track_files.stored_records(path.parent, board)
    assert any(r.success for r in records[name])
    records[name] = [r.model_copy(update={"success": False, "distance": None, "first_time_s": None})
                     for r in records[name]]
    entries = []
    for entry in board.entries:
        if entry.name == name:
            stored = track_files.write_stored(path.parent, entry.records.path, track_files.jsonl(records[name]))
            entry = entry.model_copy(update={"records": stored, "examples": None,
                                             "metrics": entry_metrics(board, name, clean, records[name])})
        entries.append(entry)
    board = board.model_copy(update={"entries": entries})
    track_files.save(path, board.model_copy(update={"comparison": comparison(board, clean, records)}))


@pytest.mark.slow
def test_check_refuses_a_trusted_jobs_entry_whose_successes_were_turned_into_failures(
        verified: tuple[Path, list[str]], tmp_path: Path) -> None:
    """Re-judging stored examples cannot see a success that was erased; running the attack again with its seeds
    does."""
    root = copy_of(verified, tmp_path) / "leaderboards"
    forge_failure(root, "degradation-aol-digits-graph", "degradation-pgd")
    audit.check_file(root / "degradation-aol-digits-graph" / "v1.json")  # consistent as a file
    with pytest.raises(RsbenchError, match=r"degradation-aol-digits-graph v1 entry degradation-pgd: sample 0's record "
                                           r"says success False, running its attack again with its seeds gives True"):
        audit.check(root, "HEAD")


def test_check_refuses_an_entry_naming_a_defense_folder_whose_content_changed(verified: tuple[Path, list[str]],
                                                                            tmp_path: Path) -> None:
    repo = copy_of(verified, tmp_path)
    with (repo / "submissions" / "defenses" / "aol-digits-graph" / "train.py").open("a") as handle:
        handle.write("# changed after its tracks were made\n")
    with pytest.raises(RsbenchError, match="entry degradation-pgd: no defense submission folder .*aol-digits-graph "
                                           "with the content hash the entry records"):
        audit.check(repo / "leaderboards", "HEAD")


@pytest.mark.slow
def test_a_dry_run_runs_the_suite_and_adds_nothing(verified: tuple[Path, list[str]], tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """On a checkout whose tracks are complete, a dry run still runs the suite (here one attack per goal, to be quick)
    and shows its numbers; nothing under the leaderboards changes."""
    repo = copy_of(verified, tmp_path)
    monkeypatch.chdir(tmp_path)  # where the trial keeps its runs (runs/verify-aol-digits-...)
    monkeypatch.setitem(defense_submissions.TRACK_PROTOCOL, "num_samples", 1)
    monkeypatch.setattr(defense_tracks, "SUITE", {"evasion": {"l2": ("pgd-l2",)},
                                                  "degradation": {"l2": ("degradation-pgd",)}, "spoofing": {"l2": ()}})
    before = sandbox.digest(repo / "leaderboards")
    lines = attack_submissions.verify(repo / "submissions" / "defenses" / "aol-digits-graph", repo / "leaderboards",
                                      timeout=300,
                               dry_run=True)
    assert lines[-3:] == ["evasion-aol-digits-graph: pgd-l2 success 0, r50 -; dry run, nothing added",
                          "degradation-aol-digits-graph: degradation-pgd fpr_lower 100; dry run, nothing added",
                          "spoofing-aol-digits-graph: no attack of the suite attacks aol-digits-graph"]
    assert sandbox.digest(repo / "leaderboards") == before


@pytest.mark.slow
def test_a_verify_stopped_after_its_first_track_keeps_its_entries_and_adds_the_rest_when_run_again(
        sandboxed: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The run that adds the tracks writes each as it ends: Ctrl-C in the second leaves the first on the leaderboard,
    and the same command run again adds the others without running the first's attacks again."""
    repo = tmp_path / "checkout"
    shutil.copytree(EXAMPLE, repo / "submissions" / "defenses" / "aol-digits-graph")
    (repo / "leaderboards").mkdir()
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "base")
    monkeypatch.setitem(defense_submissions.TRACK_PROTOCOL, "num_samples", 1)
    monkeypatch.setattr(defense_tracks, "SUITE", {"evasion": {"l2": ("pgd-l2",)},
                                                  "degradation": {"l2": ("degradation-pgd",)}, "spoofing": {"l2": ()}})
    real, judged = defense_tracks.judged_run, []

    def judged_run(board, *args, **kwargs):
        judged.append(board.track)
        if board.protocol.goal == "degradation" and len(judged) == 2:
            raise KeyboardInterrupt  # as if Ctrl-C came once the first track had ended
        return real(board, *args, **kwargs)

    monkeypatch.setattr(defense_tracks, "judged_run", judged_run)
    folder, root = repo / "submissions" / "defenses" / "aol-digits-graph", repo / "leaderboards"
    with pytest.raises(KeyboardInterrupt):
        attack_submissions.verify(folder, root, timeout=300)
    assert sorted(p.relative_to(root).parts[0] for p in root.glob("*/v1.json")) == ["evasion-aol-digits-graph"]
    first = sandbox.digest(root / "evasion-aol-digits-graph")
    lines = attack_submissions.verify(folder, root, timeout=300)
    assert judged == ["evasion-aol-digits-graph", "degradation-aol-digits-graph", "degradation-aol-digits-graph"]
    assert sandbox.digest(root / "evasion-aol-digits-graph") == first
    assert lines[-3:-1] == ["evasion-aol-digits-graph: every attack of the suite has its entry already",
                            "degradation-aol-digits-graph: degradation-pgd fpr_lower 100; entries added to "
                            f"{root / 'degradation-aol-digits-graph' / 'v1.json'}"]
    assert [e.name for e in track_files.load(root / "evasion-aol-digits-graph" / "v1.json").entries] == ["pgd-l2"]


@pytest.mark.slow
def test_validate_refuses_an_unsound_plugin_whose_import_patches_rsbench_in_vain(sandboxed: None,
                                                                                tmp_path: Path) -> None:
    """The plugin's certify doubles AOL's radius, and importing it patches rsbench's attack, verdicts and soundness
    check: the patches reach only its own sandboxed process, so rsbench's attack finds the broken point."""
    folder = copy(tmp_path, lambda d: (drop_certified(d), self_certified(d)))
    code = (folder / "aol.py").read_text().replace("/ SQRT2\n", "/ SQRT2 * 2\n")
    future = "from __future__ import annotations\n"
    (folder / "aol.py").write_text(code.replace(future, future + PATCHES))
    with pytest.raises(RsbenchError, match=r"aol-digits-graph: unsound certificate at sample 0: label 4 certified "
                                           r"within l2 radius 0\.53\d+, but pgd-l2 found label \d at distance 0\.\d+"):
        attack_submissions.validate(folder, timeout=300)
    assert not (Path(rsbench.__file__).parent / "planted.py").exists()


def copy(tmp_path: Path, change: Callable[[dict], None] | None = None, name: str = "aol-digits-graph") -> Path:
    """A copy of the example in a folder of `name`, its submission.yaml edited by `change(data)`."""
    folder = tmp_path / name
    shutil.copytree(EXAMPLE, folder)
    data = yaml.safe_load((folder / "submission.yaml").read_text())
    if change:
        change(data)
    (folder / "submission.yaml").write_text(yaml.safe_dump(data))
    return folder


def self_certified(data: dict) -> None:
    """The example as a self-certified plugin: aol.py's certifier (margin / sqrt 2, served from the sandbox) on the
    example's graph."""
    data["defense"].update(kind="plugin", implementation="./aol.py:AOLCertifier")


def drop_certified(data: dict) -> None:
    """Claims of clean accuracy only (a plugin whose radii changed claims nothing about them)."""
    for track in data["claims"].values():
        track["certified_accuracy"] = {}


def claim(value: float) -> Callable[[dict], None]:
    def change(data: dict) -> None:
        data["claims"]["evasion-aol-digits-graph"]["certified_accuracy"][0.25] = value
    return change


def test_a_claim_outside_the_reproduced_interval_is_refused(tmp_path: Path) -> None:
    submission = defense_submissions.load(copy(tmp_path, claim(99.0)))
    with pytest.raises(RsbenchError, match=r"aol-digits-graph claims certified accuracy at radius 0\.25 99% on "
                                           r"evasion-aol-digits-graph; its first 20 samples give 85\.0% "
                                           r"\[62\.1, 96\.8\]"):
        defense_submissions.recertify(submission)


@pytest.mark.parametrize(("change", "says"), [
    (lambda d: d["defense"]["weights"].update(sha256="0" * 64), "checksum mismatch"),
    (lambda d: d["defense"].update(kind="smoothing", sigma=0.5, architecture="python:./aol.py:build", weights={
        "source": "folder", "filename": "aol-digits.pt", "sha256": "0" * 64}), "is an ONNX graph that rsbench runs"),
    (lambda d: (self_certified(d), d["defense"].update(implementation="../aol-digits-graph/aol.py:AOLCertifier")),
     "must be a .py file of the"),
    (lambda d: d["defense"]["weights"].update(source="file", filename="/etc/model.onnx"), "lie in its folder"),
    (lambda d: d["defense"]["weights"].update(filename="../model.onnx"), "a file inside the spec's folder"),
    (lambda d: d.update(name="other"), "must share one name"),
    (lambda d: d["claims"].update({"evasion-gloro-digits-0.25": {"clean_accuracy": 90}}), "aol-digits-graph gets"),
    (lambda d: (self_certified(d), d["defense"].update(code_sha256={"./aol.py:AOLCertifier": "0" * 64})),
     "the code changed"),
    (lambda d: d["defense"].update(aliases=["gloro-digits-0.25"]), "remove its aliases"),
    (lambda d: d["defense"].update(kind="kw", architecture="digits-kw-cnn", weights={
        "source": "folder", "filename": "aol-digits.pt", "sha256": "0" * 64}), "is an ONNX graph that rsbench runs"),
])
def test_a_submission_is_refused_in_one_line(tmp_path: Path, change: Callable[[dict], None], says: str) -> None:
    with pytest.raises(RsbenchError) as error:
        defense_submissions.load(copy(tmp_path, change))
    assert says in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("name", ["gloro-digits-0.25", "gloro-digits-0.5"])  # a registry name, a registry alias
def test_a_submitted_defense_never_takes_a_registry_defenses_name(tmp_path: Path, name: str) -> None:
    """Submitted defenses are named by their folder and never listed by the registry, so a folder named like a
    registry defense (or one of its aliases) could only pass for it through its tracks: refused."""
    def rename(data: dict) -> None:
        data["name"] = data["defense"]["name"] = name
        data["claims"] = {f"evasion-{name}": data["claims"]["evasion-aol-digits-graph"]}

    with pytest.raises(RsbenchError, match=f"'{name}' is the name \\(or an alias\\) of a registry defense"):
        defense_submissions.load(copy(tmp_path, rename, name))
    assert "aol-digits-graph" not in registry.names("defenses")
    assert registry.get_defense(str(EXAMPLE)).name == "aol-digits-graph"  # by its folder


def test_verify_refuses_a_track_that_holds_another_defense_of_its_name(tmp_path: Path) -> None:
    other = defense_submissions.load(EXAMPLE).defense.model_copy(update={"epsilon": 0.5})
    protocol = defense_submissions.track_protocols(other)["evasion-aol-digits-graph"]
    track_files.save(tmp_path / "evasion-aol-digits-graph" / "v1.json", track_files.Leaderboard(
        track="evasion-aol-digits-graph", version=1, defense=other, protocol=protocol,
        protocol_hash=protocol.spec_hash(),
        clean=track_files.StoredFile(path="", sha256="")))
    with pytest.raises(RsbenchError, match="evasion-aol-digits-graph holds another defense named aol-digits-graph"):
        attack_submissions.verify(EXAMPLE, tmp_path, dry_run=True, isolated=sandbox.unavailable() is None)


def test_code_a_track_names_runs_only_from_its_submission_folder(tmp_path: Path) -> None:
    folder = copy(tmp_path / "defenses", self_certified)
    spec = defense_submissions.load(folder).defense
    assert defense_submissions.located(spec, tmp_path)._folder == folder
    with pytest.raises(RsbenchError, match=r"aol-digits-graph names code of its own \(\./aol\.py:AOLCertifier\), but "
                                           r"no submission folder .* holds its spec"):
        defense_submissions.located(spec, tmp_path / "elsewhere")
    with user_code.refused("which holds a stand-in"), pytest.raises(RsbenchError, match="would run in rsbench's own "
                                                                                         "process, which holds"):
        rsbench.load_defense(spec)


def test_a_served_defenses_answers_cross_as_checked_tensors_only() -> None:
    x = torch.rand(3, 1, 8, 8)
    message = tensor_pipe.encode({"value": [1, None]}, {"x": x, "labels": torch.tensor([1, 2])})
    head, size = tensor_pipe.FRAME.unpack(message[:8])
    body = message[8 + head:]
    header, tensors = tensor_pipe.decode(message[8:8 + head], body)
    assert len(body) == size and header == {"value": [1, None]}
    assert torch.equal(tensors["x"], x) and tensors["labels"].tolist() == [1, 2]
    for bad in (b'{"tensors": [["x", "object", [1]]]}', b'{"tensors": [["x", "float32", [1000]]]}', b"[1]",
                b'{"tensors": [["x", "float32", [2]]]}'):  # an unknown type, more bytes than sent, no mapping, fewer
        with pytest.raises(ValueError):
            tensor_pipe.decode(bad, body)


class CallCounting(torch.nn.Module):
    """A base classifier whose answer depends on how often it was called: class 0 on two calls, class 1 on the next two."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.scale = torch.nn.Parameter(torch.ones(()), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        logits = torch.zeros(len(x), 10)
        logits[:, (self.calls - 1) // 2 % 2] = 10 * self.scale
        return logits


def test_smoothing_certify_must_agree_with_a_second_independent_run() -> None:
    dataset = rsbench.load_dataset("digits")
    samples = [dataset[i] for i in range(4)]
    spec = registry.get_defense("smoothing-digits-0.50")
    sound = Smoothing(rsbench.load_defense(spec).base_classifier, 10, 0.5, n0=50, n=500, alpha=0.001, batch_size=500)
    assert soundness.check(spec, sound, samples, seed=12345).tested > 0
    stateful = Smoothing(CallCounting(), 10, 0.5, n0=50, n=500, alpha=0.001, batch_size=500)
    with pytest.raises(RsbenchError, match=r"CERTIFY disagrees with a second independent run beyond its error on 4 of 8 "
                                           r"certificates \(a sound one allows 1\): sample 0 \(class 1"):
        soundness.check(spec, stateful, samples)


class KnowsTheTracksNoise(torch.nn.Module):
    """A base classifier that answers with the true label on the noise of the track's certification (seed 0), which
    anyone can draw, and with class 0 elsewhere: the certificates the track would store are perfect."""

    def __init__(self, base: torch.nn.Module, samples: list, n0: int, n: int) -> None:
        super().__init__()
        self.base, self.known = base, {}
        for index, (x, label) in enumerate(samples):
            generator = rsbench.runner.sample_generator(0, index, torch.device("cpu"))
            for count in (n0, n):
                noise = torch.randn((count, *x.shape), generator=generator)
                for row in x + 0.5 * noise:
                    self.known[row.flatten()[:4].numpy().tobytes()] = label

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        labels = [self.known.get(row.flatten()[:4].numpy().tobytes(), 0) for row in x]
        return torch.nn.functional.one_hot(torch.tensor(labels), 10).float() * 10


def test_smoothing_soundness_compares_the_tracks_certificates_with_noise_no_one_knew() -> None:
    dataset = rsbench.load_dataset("digits")
    samples = [dataset[i] for i in range(4)]
    spec = registry.get_defense("smoothing-digits-0.50")
    cheat = KnowsTheTracksNoise(rsbench.load_defense(spec).base_classifier, samples, 50, 500)
    defense = Smoothing(cheat, 10, 0.5, n0=50, n=500, alpha=0.001, batch_size=500)
    certified = defense.certify(samples[1][0], generator=rsbench.runner.sample_generator(0, 1, torch.device("cpu")))
    assert certified.prediction == samples[1][1] and certified.radius > 1  # the track would store this
    with pytest.raises(RsbenchError, match="CERTIFY disagrees with a second independent run beyond its error on"):
        soundness.check(spec, defense, samples, seed=987654321)


CHEAT = '''
"""A self-certified plugin on the AOL graph that lies twice: its network gives the graph's logits with a gradient that
points the other way, and its certificates are three times the true margin / sqrt 2."""
import math

import torch

from rsbench.defenses.base import Certificate, Defense


class _Reversed(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return -grad


class Masked(torch.nn.Module):
    def __init__(self, graph):
        super().__init__()
        self.graph = graph

    def forward(self, x):
        return self.graph(_Reversed.apply(x))


class Cheat(Defense):
    norm = "l2"

    def __init__(self, model, num_classes):
        self.model, self.num_classes = Masked(model), num_classes

    @classmethod
    def from_spec(cls, spec, model):
        return cls(model, spec.num_classes)

    @property
    def device(self):
        return torch.device("cpu")

    def to(self, device):
        return self

    def certify(self, x, *, generator=None):
        top2 = self.model(x[None]).double().topk(2, dim=1)
        return Certificate(int(top2.indices[0, 0]), 3 * float(top2.values[0, 0] - top2.values[0, 1]) / math.sqrt(2))

    def predict(self, x, *, generator=None):
        return self.certify(x).prediction
'''


def cheat(tmp_path: Path) -> Path:
    """A copy of the example whose certifier is `CHEAT` (claiming clean accuracy only)."""
    folder = copy(tmp_path, lambda d: (drop_certified(d), d["defense"].update(kind="plugin",
                                                                               implementation="./cheat.py:Cheat")))
    (folder / "cheat.py").write_text(CHEAT)
    return folder


UNSOUND = (r"aol-digits-graph: unsound certificate at sample 0: label 4 certified within l2 radius 0\.80\d+, but "
           r"pgd-l2 found label \d at distance 0\.[0-7]\d*")
"""The counterexample: sample 0 is certified at 0.268 in truth; rsbench's gradients break it within 0.80."""


@pytest.mark.slow
def test_a_self_certified_plugin_with_a_false_gradient_and_inflated_radii_is_refused(sandboxed: None,
                                                                                       tmp_path: Path) -> None:
    """Its certificates come from the sandbox, but rsbench attacks the graph with its own gradients (the plugin's
    reversed one is never asked for), and the counterexample is named, by validate and by verify."""
    folder = cheat(tmp_path)
    with pytest.raises(RsbenchError, match=UNSOUND):
        defense_tracks.validate(folder, timeout=300, samples=2)
    with pytest.raises(RsbenchError, match=UNSOUND):
        attack_submissions.verify(folder, tmp_path / "leaderboards", timeout=300, samples=2)


@pytest.mark.slow
def test_check_refuses_the_tracks_of_a_self_certified_plugin_whose_radii_are_inflated(
        sandboxed: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tracks made by the cheat while the soundness check was skipped (an older rsbench, a forged run): `check`
    audits a self-certified defense again itself and refuses them, naming the counterexample."""
    repo = tmp_path / "checkout"
    cheat(repo / "submissions" / "defenses")
    (repo / "leaderboards").mkdir()
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "base")
    skipped = soundness.Report(0, 0, "skipped")
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(defense_submissions.TRACK_PROTOCOL, "num_samples", 1)
        patch.setattr(defense_tracks, "SUITE", {"evasion": {"l2": ("pgd-l2",)}, "degradation": {"l2": ()},
                                                "spoofing": {"l2": ()}})
        patch.setattr(defense_tracks, "check_soundness", lambda *args, **kwargs: skipped)
        attack_submissions.verify(repo / "submissions" / "defenses" / "aol-digits-graph", repo / "leaderboards",
                                  timeout=300)
    with pytest.raises(RsbenchError, match=UNSOUND):
        audit.check(repo / "leaderboards", "HEAD")


@pytest.mark.parametrize("step", ["validate", "verify"])
def test_a_graph_claiming_more_than_rsbench_certifies_is_refused(tmp_path: Path, step: str) -> None:
    """The graph's certificates are rsbench's (its own Lipschitz bound); a claim above them is refused before
    anything runs on the defense, by validate and by verify."""
    folder = copy(tmp_path, claim(99.0))
    says = (r"aol-digits-graph claims certified accuracy at radius 0\.25 99% on evasion-aol-digits-graph; its first 20 "
            r"samples give 85\.0% \[62\.1, 96\.8\]; refused")
    with pytest.raises(RsbenchError, match=says):
        if step == "validate":
            defense_tracks.validate(folder)
        else:
            attack_submissions.verify(folder, tmp_path / "leaderboards", dry_run=True)


@pytest.mark.slow
def test_check_refuses_a_graph_track_whose_certificates_are_larger_than_rsbench_computes(
        verified: tuple[Path, list[str]], tmp_path: Path) -> None:
    """A track file of the graph whose stored clean radii were tripled, consistently as a file: `check` certifies
    the graph again with rsbench's certifier and refuses it, naming the sample."""
    root = copy_of(verified, tmp_path) / "leaderboards"
    path = root / "evasion-aol-digits-graph" / "v1.json"
    board = track_files.load(path)
    clean, _ = track_files.stored_records(path.parent, board)
    inflated = [r.model_copy(update={"radius": 3 * r.radius}) for r in clean]
    stored = track_files.write_stored(path.parent, board.clean.path, track_files.jsonl(inflated))
    track_files.save(path, board.model_copy(update={"clean": stored}))
    with pytest.raises(RsbenchError, match=r"evasion-aol-digits-graph/v1\.json: sample 0's clean certificate is not "
                                           r"what certifying it gives"):
        audit.check(root, "HEAD")
