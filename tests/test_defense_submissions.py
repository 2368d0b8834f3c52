"""Defense submissions: the shipped AOL example validates and earns its tracks, which check derives again; what a
cheater would try (claims, names, an unsound certificate, code that patches rsbench, forged records) is refused.

The sandboxed tests share one verified copy of the example under a one-sample protocol (the standard one is the
first 20 samples; `benchmarks`-style timings of the full one are in CONTRIBUTING.md). A test that needs bubblewrap
fails on CI (CI=1) and skips elsewhere.
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

EXAMPLE = Path(__file__).resolve().parents[1] / "submissions" / "defenses" / "aol-digits"
TRACKS = ["degradation-aol-digits", "evasion-aol-digits", "spoofing-aol-digits"]
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
    shutil.copytree(EXAMPLE, repo / "submissions" / "defenses" / "aol-digits")
    (repo / "leaderboards").mkdir()
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "base")
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(defense_submissions.TRACK_PROTOCOL, "num_samples", 1)
        lines = attack_submissions.verify(repo / "submissions" / "defenses" / "aol-digits", repo / "leaderboards",
                                   timeout=300)
    yield repo, lines


def copy_of(verified: tuple[Path, list[str]], tmp_path: Path) -> Path:
    shutil.copytree(verified[0], tmp_path / "checkout")
    return tmp_path / "checkout"


@pytest.mark.slow  # a sandboxed process that imports torch, and the whole suite on one sample, twice
def test_the_aol_example_earns_its_tracks_and_check_derives_them_again(verified: tuple[Path, list[str]],
                                                                        tmp_path: Path) -> None:
    repo, lines = verified
    assert lines[0].startswith("aol-digits: schema, names, files and weights")
    assert [line.split(":")[0] for line in lines[1:4]] == ["evasion-aol-digits", "degradation-aol-digits",
                                                          "spoofing-aol-digits"]
    assert "clean accuracy 95% in [" in lines[1]
    assert "soundness on the first 1 test samples (noise seed" in lines[4] and "by pgd-l2: no label changed" in lines[4]
    assert lines[5].startswith("evasion-aol-digits: pgd-l2 success 0, r50 -; entries added to")
    assert lines[6].startswith("degradation-aol-digits: degradation-pgd fpr_lower 100; degradation-eps-pgd fpr_lower "
                               "100; degradation-adaptive fpr_lower 100; entries added")
    root = repo / "leaderboards"
    boards = [track_files.load(path) for path in track_files.files(root)]
    assert [b.track for b in boards] == TRACKS
    digest = content_sha256(repo / "submissions" / "defenses" / "aol-digits")
    for board in boards:
        assert board.defense.spec_hash() == defense_submissions.load(EXAMPLE).defense.spec_hash()
        for entry in board.entries:
            assert (entry.source.kind, entry.source.submission, entry.source.content_sha256) == \
                   ("defense-submission", "aol-digits", digest)
            assert entry.judging is not None and entry.self_reported == [] and entry.seed != board.protocol.seed
    for board in boards[:2]:  # degradation, evasion: the served defense answers as the same code in this process
        path = root / board.track / "v1.json"
        here = board.model_copy(update={"defense": defense_submissions.load(EXAMPLE).defense})
        clean, records = track_files.stored_records(path.parent, board)
        for entry in board.entries:
            again, _, _ = defense_tracks.judged_run(here, clean, entry.attack, entry.seed, entry.judging.seed,
                                                    tmp_path / board.track)
            assert [rederive.differing(a.model_dump(), b.model_dump())
                    for a, b in zip(records[entry.name], again)] == [None] * len(again)
    checked = audit.check(root, "HEAD")
    assert len(checked.new) == 5 and not checked.verification.refuted()
    with pytest.raises(RsbenchError, match="added by the trusted job"):
        audit.check(root, "HEAD", pull_request=True)
    site.render(root)
    page = (root / "site" / "defense-aol-digits.html").read_text()
    assert "evasion-aol-digits" in page and "degradation-aol-digits" in page


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
    forge_failure(root, "degradation-aol-digits", "degradation-pgd")
    audit.check_file(root / "degradation-aol-digits" / "v1.json")  # consistent as a file
    with pytest.raises(RsbenchError, match=r"degradation-aol-digits v1 entry degradation-pgd: sample 0's record says "
                                           r"success False, running its attack again with its seeds gives True"):
        audit.check(root, "HEAD")


def test_check_refuses_an_entry_naming_a_defense_folder_whose_content_changed(verified: tuple[Path, list[str]],
                                                                            tmp_path: Path) -> None:
    repo = copy_of(verified, tmp_path)
    with (repo / "submissions" / "defenses" / "aol-digits" / "train.py").open("a") as handle:
        handle.write("# changed after its tracks were made\n")
    with pytest.raises(RsbenchError, match="entry degradation-pgd: no defense submission folder .*aol-digits with "
                                           "the content hash the entry records"):
        audit.check(repo / "leaderboards", "HEAD")


@pytest.mark.slow
def test_a_dry_run_runs_the_suite_and_adds_nothing(verified: tuple[Path, list[str]], tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """On a checkout whose tracks are complete, a dry run still runs the suite (here one attack per goal, to be quick)
    and shows its numbers; nothing under the leaderboards changes."""
    repo = copy_of(verified, tmp_path)
    monkeypatch.setitem(defense_submissions.TRACK_PROTOCOL, "num_samples", 1)
    monkeypatch.setattr(defense_tracks, "SUITE", {"evasion": {"l2": ("pgd-l2",)},
                                                  "degradation": {"l2": ("degradation-pgd",)}, "spoofing": {"l2": ()}})
    before = sandbox.digest(repo / "leaderboards")
    lines = attack_submissions.verify(repo / "submissions" / "defenses" / "aol-digits", repo / "leaderboards", timeout=300,
                               dry_run=True)
    assert lines[-3:] == ["evasion-aol-digits: pgd-l2 success 0, r50 -; dry run, nothing added",
                          "degradation-aol-digits: degradation-pgd fpr_lower 100; dry run, nothing added",
                          "spoofing-aol-digits: no attack of the suite attacks aol-digits"]
    assert sandbox.digest(repo / "leaderboards") == before


@pytest.mark.slow
def test_validate_refuses_an_unsound_plugin_whose_import_patches_rsbench_in_vain(sandboxed: None,
                                                                                tmp_path: Path) -> None:
    """The plugin's certify doubles AOL's radius, and importing it patches rsbench's attack, verdicts and soundness
    check: the patches reach only its own sandboxed process, so rsbench's attack finds the broken point."""
    folder = copy(tmp_path, drop_certified)
    code = (folder / "aol.py").read_text().replace("/ SQRT2\n", "/ SQRT2 * 2\n")
    future = "from __future__ import annotations\n"
    (folder / "aol.py").write_text(code.replace(future, future + PATCHES))
    with pytest.raises(RsbenchError, match=r"aol-digits: unsound certificate at sample 0: label 4 certified within l2 "
                                           r"radius 0\.53\d+, but pgd-l2 found label \d at distance 0\.\d+"):
        attack_submissions.validate(folder, timeout=300)
    assert not (Path(rsbench.__file__).parent / "planted.py").exists()


def copy(tmp_path: Path, change: Callable[[dict], None] | None = None, name: str = "aol-digits") -> Path:
    """A copy of the example in a folder of `name`, its submission.yaml edited by `change(data)`."""
    folder = tmp_path / name
    shutil.copytree(EXAMPLE, folder)
    data = yaml.safe_load((folder / "submission.yaml").read_text())
    if change:
        change(data)
    (folder / "submission.yaml").write_text(yaml.safe_dump(data))
    return folder


def drop_certified(data: dict) -> None:
    """Claims of clean accuracy only (a plugin whose radii changed claims nothing about them)."""
    for track in data["claims"].values():
        track["certified_accuracy"] = {}


def claim(value: float) -> Callable[[dict], None]:
    def change(data: dict) -> None:
        data["claims"]["evasion-aol-digits"]["certified_accuracy"][0.25] = value
    return change


def test_a_claim_outside_the_reproduced_interval_is_refused(tmp_path: Path) -> None:
    submission = defense_submissions.load(copy(tmp_path, claim(99.0)))
    with pytest.raises(RsbenchError, match=r"aol-digits claims certified accuracy at radius 0\.25 99% on "
                                           r"evasion-aol-digits; its first 20 samples give 85\.0% \[62\.1, 96\.8\]"):
        defense_submissions.recertify(submission)


@pytest.mark.parametrize(("change", "says"), [
    (lambda d: d["defense"]["weights"].update(sha256="0" * 64), "checksum mismatch"),
    (lambda d: d["defense"].update(architecture="python:../aol-digits/aol.py:build"), "must be a .py file of the"),
    (lambda d: d["defense"]["weights"].update(source="file", filename="/etc/passwd"), "lie in its folder"),
    (lambda d: d["defense"]["weights"].update(filename="../aol-digits.pt"), "a file inside the spec's folder"),
    (lambda d: d.update(name="other"), "must share one name"),
    (lambda d: d["claims"].update({"evasion-gloro-digits-0.25": {"clean_accuracy": 90}}), "aol-digits gets"),
    (lambda d: d["defense"].update(code_sha256={"./aol.py:build": "0" * 64}), "the code changed"),
    (lambda d: d["defense"].update(aliases=["gloro-digits-0.25"]), "remove its aliases"),
    (lambda d: d["defense"].update(kind="gloro", implementation=None), "submit the certifier as a plugin"),
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
        data["claims"] = {f"evasion-{name}": data["claims"]["evasion-aol-digits"]}

    with pytest.raises(RsbenchError, match=f"'{name}' is the name \\(or an alias\\) of a registry defense"):
        defense_submissions.load(copy(tmp_path, rename, name))
    assert "aol-digits" not in registry.names("defenses")
    assert registry.get_defense(str(EXAMPLE)).name == "aol-digits"  # by its folder


def test_verify_refuses_a_track_that_holds_another_defense_of_its_name(tmp_path: Path) -> None:
    other = defense_submissions.load(EXAMPLE).defense.model_copy(update={"epsilon": 0.5})
    protocol = defense_submissions.track_protocols(other)["evasion-aol-digits"]
    track_files.save(tmp_path / "evasion-aol-digits" / "v1.json", track_files.Leaderboard(
        track="evasion-aol-digits", version=1, defense=other, protocol=protocol, protocol_hash=protocol.spec_hash(),
        clean=track_files.StoredFile(path="", sha256="")))
    with pytest.raises(RsbenchError, match="evasion-aol-digits holds another defense named aol-digits"):
        attack_submissions.verify(EXAMPLE, tmp_path, dry_run=True, isolated=sandbox.unavailable() is None)


def test_code_a_track_names_runs_only_from_its_submission_folder(tmp_path: Path) -> None:
    spec = defense_submissions.load(EXAMPLE).defense
    assert defense_submissions.located(spec, EXAMPLE.parents[1])._folder == EXAMPLE
    with pytest.raises(RsbenchError, match=r"aol-digits names code of its own \(\./aol\.py:build, \./aol\.py:"
                                           r"AOLCertifier\), but no submission folder .* holds its spec"):
        defense_submissions.located(spec, tmp_path)
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
