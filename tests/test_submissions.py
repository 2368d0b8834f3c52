"""Submissions: run in the sandbox, every judged fact rebuilt by rsbench, claims compared with reproduced intervals.

Each hostile submission here replays a way in that once got an undeserved entry admitted: a forged run
directory, a write into the harness package or the leaderboards, reading other entries' examples, judging
itself. A test that needs bubblewrap fails on CI (CI=1), where `.ci/run` installs it, and skips elsewhere.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import rsbench
from rsbench.errors import RsbenchError
from rsbench.gate import audit
from rsbench.leaderboard import track_files
from rsbench.submissions import attack_submissions, claims, submission_run
from rsbench.submissions.submission_spec import commit_of, content_sha256, load_submission

TRACK = "evasion-smoothing-digits-0.50"
ATTACK_HEADER = '''
import torch
from rsbench.attacks.base import Attack, ViewParams


class Params(ViewParams):
    """Nothing to set."""
'''
IDLE = ATTACK_HEADER + '''

class Idle(Attack):
    Params = Params
    kinds = ("smoothing",)

    def run(self, view, x, label, tracker, generator):
        tracker.iterations += 1  # proposes nothing: it never succeeds
'''
SELF_JUDGING = ATTACK_HEADER + '''
import rsbench.attacks.success

rsbench.attacks.success.is_adversarial = lambda *args, **kwargs: True  # judges itself a winner


class Cheat(Attack):
    Params = Params
    kinds = ("smoothing",)

    def run(self, view, x, label, tracker, generator):
        tracker.offer((x + 0.01).clamp(0, 1))  # barely moved: not adversarial
'''
NEAREST_OTHER = ATTACK_HEADER + '''
from rsbench.data import load_dataset


class NearestOther(Attack):
    """Proposes the test images of other classes nearest to x: far, but honestly adversarial."""

    Params = Params
    kinds = ("smoothing",)

    def run(self, view, x, label, tracker, generator):
        data = load_dataset("digits", "test")
        others = sorted((float((data[k][0] - x.cpu()).norm()), k) for k in range(len(data)) if int(data[k][1]) != label)
        for _, k in others[:5]:
            tracker.offer(data[k][0].to(x.device))
            tracker.iterations += 1
'''
HOSTILE = ATTACK_HEADER + '''
import atexit
import json
from pathlib import Path

from pydantic import Field


class HostileParams(ViewParams):
    write: list[str] = Field(default_factory=list)
    """Files to write into (a plant in the harness package, a leaderboard file)."""
    read: str = ""
    """A file to read (another entry's stored examples)."""
    forge: bool = False
    """Rewrite the run directory at exit: a fake x 0.05 from an image of another class, tiny radii."""


def forge():
    from rsbench.data import load_dataset

    data = load_dataset("digits", "test")
    out = next(Path.cwd().rglob("samples.jsonl")).parent
    records = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines() if line.strip()]
    index, xs, advs = [], [], []
    for r in records:
        other = next(data[k][0] for k in range(60, len(data)) if int(data[k][1]) != r["label"])
        index.append(r["index"]), xs.append(other + 0.05 / 8), advs.append(other)  # ||x_adv - x|| = 0.05
        r.update(success=True, best_radius=0.05, first_radius=0.05, best_time_s=0.01, first_time_s=0.01,
                 candidates=1, rejected=0)
    (out / "samples.jsonl").write_text("".join(json.dumps(r) + "\\n" for r in records))
    (out / "adversarial").mkdir(exist_ok=True)
    torch.save({"index": torch.tensor(index), "x": torch.stack(xs), "x_adv": torch.stack(advs)},
               out / "adversarial" / "hostile.pt")


class Hostile(Attack):
    Params = HostileParams
    kinds = ("smoothing",)

    def run(self, view, x, label, tracker, generator):
        for path in self.params.write:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_bytes(b"planted")
        if self.params.read:
            Path(self.params.read).read_bytes()
        if self.params.forge:
            atexit.register(forge)
        tracker.iterations += 1
'''


def submission(folder: Path, name: str, code: str, cls: str, claims: dict[str, float | None],
               params: dict | None = None) -> Path:
    path = folder / name
    path.mkdir(parents=True)
    module = name.replace("-", "_")
    (path / f"{module}.py").write_text(code)
    (path / "submission.yaml").write_text(yaml.safe_dump({
        "name": name, "authors": ["a"], "paper": "https://example.org", "licence": "MIT", "claims": {TRACK: claims},
        "attack": {"name": name, "implementation": f"{module}:{cls}", "goal": "evasion", "norm": "l2",
                   "params": {"num_noise": 100, **(params or {})}},
    }))
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A track with the smoke protocol (two samples, light certification and judge) and no entries yet."""
    probe = submission(tmp_path / "probe", "probe", IDLE, "Idle", {"success": 0, "r50": None})
    _, board = attack_submissions.smoke_protocol(load_submission(probe), "smoothing")
    protocol = board.protocol.model_copy(update={"num_samples": 2})
    folder = tmp_path / "leaderboards"
    track_files.save(folder / TRACK / "v1.json", board.model_copy(update={"track": TRACK, "protocol": protocol,
                                                                          "protocol_hash": protocol.spec_hash()}))
    return folder


def hostile(tmp_path: Path, **params: object) -> Path:
    return submission(tmp_path / "submissions", "hostile", HOSTILE, "Hostile", {"success": 100, "r50": 0.05}, params)


@pytest.mark.slow  # each test starts a sandboxed process that imports torch
def test_an_honest_submission_gets_an_entry_whose_judging_anyone_replays(sandboxed: None, root: Path,
                                                                          tmp_path: Path) -> None:
    """The trusted job's path: the entry rests on verdicts rebuilt here; check derives it again, and a pull
    request may not carry such an entry itself."""
    folder = submission(tmp_path / "submissions", "nearest-other", NEAREST_OTHER, "NearestOther",
                        {"success": 100, "r50": 0.05})
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "leaderboards", "submissions"], check=True)
    subprocess.run([*git, "commit", "-qm", "base"], check=True)
    base = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    with pytest.raises(RsbenchError, match=r"claims r50 0.05 on .* reproduces") as refused:  # its true distances
        attack_submissions.verify(folder, root, timeout=300)
    reproduced = str(refused.value).split("reproduces ")[1].split()[0]
    assert float(reproduced) > 1  # another digit lies far from x
    text = (folder / "submission.yaml").read_text()
    (folder / "submission.yaml").write_text(text.replace("r50: 0.05", f"r50: {reproduced}"))
    assert commit_of(folder) is None  # changed since its commit: the entry records no commit
    subprocess.run([*git, "commit", "-qam", "claims"], check=True)
    [line] = attack_submissions.verify(folder, root, timeout=300)
    assert "entry nearest-other added" in line
    path = root / TRACK / "v1.json"
    entry = track_files.load(path).entries[0]
    assert entry.source.commit == commit_of(folder) and entry.source.content_sha256 == content_sha256(folder)
    assert entry.judging is not None and "time_s" in entry.self_reported and entry.attacked >= 1
    replay = audit.verify(path, "nearest-other", seed=entry.judging.seed, as_admitted=True)
    assert replay.agreement["nearest-other"][0] == replay.agreement["nearest-other"][1] >= 1
    checked = audit.check(root, base)
    assert checked.new == [f"{TRACK} v1 nearest-other"] and not checked.verification.refuted()
    with pytest.raises(RsbenchError, match="added by the trusted job"):
        audit.check(root, base, pull_request=True)


@pytest.mark.slow
def test_a_forged_run_directory_is_refused(sandboxed: None, root: Path, tmp_path: Path) -> None:
    """An exit hook rewrote the records and saved fake x 0.05 from images of other classes: the examples
    are read against the dataset, and the records are never read for a judged fact."""
    with pytest.raises(RsbenchError, match="whose x is not the dataset's; refused"):
        attack_submissions.verify(hostile(tmp_path, forge=True), root, timeout=300)
    assert track_files.load(root / TRACK / "v1.json").entries == []


@pytest.mark.slow
def test_a_write_into_the_harness_package_is_refused_by_the_sandbox(sandboxed: None, root: Path,
                                                                      tmp_path: Path) -> None:
    """The sandbox sees no checkout: the write fails or lands in the sandbox's own throwaway root, never in the
    package the judge imports, and the run earns nothing."""
    plant = Path(rsbench.__file__).parent / "__pycache__" / f"models.{sys.implementation.cache_tag}.pyc"
    before = plant.read_bytes() if plant.exists() else None
    with pytest.raises(RsbenchError, match=r"hostile (failed on .*(No such file|Read-only|Permission denied)|"
                                           r"claims .* reproduces)"):
        attack_submissions.verify(hostile(tmp_path, write=[str(plant)]), root, timeout=300)
    assert (plant.read_bytes() if plant.exists() else None) == before


@pytest.mark.slow
def test_reading_other_entries_examples_is_refused_by_the_sandbox(sandboxed: None, root: Path,
                                                                 tmp_path: Path) -> None:
    shipped = Path(__file__).resolve().parents[1] / "leaderboards"
    stored = shipped / TRACK / track_files.load(shipped / TRACK / "v1.json").entries[0].examples.path
    assert stored.exists()
    with pytest.raises(RsbenchError, match="hostile failed on .*No such file"):
        attack_submissions.verify(hostile(tmp_path, read=str(stored)), root, timeout=300)


@pytest.mark.slow
def test_without_the_sandbox_a_write_into_the_package_or_leaderboards_is_caught_by_the_digests(
        root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--unsandboxed (a local trial; refused on CI) still fingerprints the trees a run must leave alone."""
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    plant = Path(rsbench.__file__).parent / "__pycache__" / "zz-planted-by-a-test.pyc"
    folder = hostile(tmp_path, write=[str(plant), str(root / TRACK / "planted.json")])
    try:
        with pytest.raises(RsbenchError, match="the rsbench package and the leaderboards changed while hostile ran"):
            attack_submissions.verify(folder, root, timeout=300, isolated=False)
    finally:
        plant.unlink(missing_ok=True)


def test_unsandboxed_runs_are_refused_on_ci(root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "1")
    with pytest.raises(RsbenchError, match="refused on CI"):
        attack_submissions.verify(hostile(tmp_path), root, timeout=300, isolated=False)


@pytest.mark.slow
def test_a_submission_judging_itself_reproduces_nothing(sandboxed: None, root: Path, tmp_path: Path) -> None:
    folder = submission(tmp_path, "cheat", SELF_JUDGING, "Cheat", {"success": 100, "r50": None})
    with pytest.raises(RsbenchError, match=r"claims success 100 on .* reproduces 0 \[0, 0\]; refused"):
        attack_submissions.verify(folder, root, timeout=300)
    assert track_files.load(root / TRACK / "v1.json").entries == []


@pytest.mark.slow
def test_verify_on_a_subset_checks_the_claims_on_its_samples_and_adds_no_entry(sandboxed: None, root: Path,
                                                                              tmp_path: Path) -> None:
    idle = submission(tmp_path, "idle", IDLE, "Idle", {"success": 0, "r50": None})
    [line] = attack_submissions.verify(idle, root, timeout=300, samples=1)
    assert "consistent with the first 1 samples" in line and "no entry added" in line
    assert track_files.load(root / TRACK / "v1.json").entries == []


def test_claims_must_be_what_the_run_reproduces_to_the_digits_the_tables_show() -> None:
    """A claim anywhere inside the 95% interval (79 where the run gives 50 [20, 80]) is refused; the value as the
    tables show it passes; a run of a track's first samples only is held to its interval."""
    reproduced = {"success": track_files.Interval(value=50, ci_low=20, ci_high=80),
                  "r50": track_files.Interval(value=0.123456, ci_low=0.1, ci_high=0.2)}
    attack_submissions.check_claims("a", TRACK, {"success": 50, "r50": 0.123}, reproduced)
    attack_submissions.check_claims("a", TRACK, {"success": 79, "r50": 0.19}, reproduced, exact=False)
    for claimed, reason in [({"success": 79}, r"claims success 79 .* reproduces 50 \[20, 80\]; refused"),
                            ({"r50": 0.124}, r"claims r50 0.124 .* reproduces 0.123 \[0.1, 0.2\]; refused"),
                            ({"r50": None}, r"claims r50 None .* reproduces 0.123"),
                            ({"time_s": 1}, "does not report")]:
        with pytest.raises(RsbenchError, match=reason):
            attack_submissions.check_claims("a", TRACK, claimed, reproduced)
    with pytest.raises(RsbenchError, match=r"claims success 81 .* on its first samples; refused"):
        attack_submissions.check_claims("a", TRACK, {"success": 81}, reproduced, exact=False)


@pytest.mark.parametrize(("claims", "reason"), [
    ({TRACK: {}}, "must give success, r50"),
    ({TRACK: {"success": 100}}, r"r50 missing"),
    ({"degradation-gloro-digits-0.25": {"fpr_lower": 1}}, "the attack's goal, evasion"),
    ({f"{TRACK}@v1": {"success": 1, "r50": 1}}, "without a version"),
])
def test_claims_name_tracks_of_the_goal_and_give_its_headline_metrics(tmp_path: Path, claims: dict,
                                                                       reason: str) -> None:
    folder = submission(tmp_path, "idle", IDLE, "Idle", {})
    data = yaml.safe_load((folder / "submission.yaml").read_text()) | {"claims": claims}
    (folder / "submission.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(RsbenchError, match=reason):
        load_submission(folder)


def test_a_submission_may_not_take_a_registry_attacks_name_nor_hold_links(tmp_path: Path) -> None:
    folder = submission(tmp_path, "pgd", IDLE, "Idle", {"success": 0, "r50": None})
    with pytest.raises(RsbenchError, match="'pgd' is the name of a registry attack"):
        load_submission(folder)
    folder = submission(tmp_path / "other", "idle", IDLE, "Idle", {"success": 0, "r50": None})
    (folder / "data").symlink_to(Path(__file__).resolve().parents[1] / "leaderboards")
    with pytest.raises(RsbenchError, match="plain files only"):
        load_submission(folder)


def test_a_link_left_in_the_scratch_folder_is_never_followed(root: Path, tmp_path: Path) -> None:
    """A child could leave its examples file as a link to any file of the machine (say another run's examples):
    rsbench reads plain files inside the scratch folder only."""
    board = track_files.load(root / TRACK / "v1.json")
    _, dataset = submission_run.prepare(board)
    elsewhere = tmp_path / "someone-elses-run.pt"
    torch.save({"index": torch.tensor([0]), "x": dataset[0][0][None], "x_adv": dataset[1][0][None]}, elsewhere)
    run = tmp_path / "scratch" / "run"
    (run / "adversarial").mkdir(parents=True)
    (run / "samples.jsonl").write_text("")
    (run / "adversarial" / "hostile.pt").symlink_to(elsewhere)
    with pytest.raises(RsbenchError, match="left hostile.pt as something other than a plain file"):
        submission_run.returned(board, dataset, "hostile", run)


SHIPPED = Path(__file__).resolve().parents[1] / "leaderboards"
RAISER = ATTACK_HEADER + '''

class Raiser(Attack):
    """Attacks every digit but the ones."""

    Params = Params
    kinds = ("smoothing",)

    def run(self, view, x, label, tracker, generator):
        if label == 1:
            raise ValueError("cannot attack ones")
        tracker.iterations += 1
'''


def test_every_metric_has_a_domain() -> None:
    assert {k for goal in track_files.METRICS.values() for k in goal} == set(track_files.DOMAINS)


@pytest.mark.parametrize(("claims", "message"), [
    ({"success": 0, "r50": None, "r_50": 0.5}, f"claims 'r_50' on {TRACK}, which is not a metric of evasion entries; "
                                               "did you mean 'r50'?"),
    ({"success": 0, "r50": None, "sucess": 0}, "did you mean 'success'?"),
    ({"success": 120, "r50": 0.5}, f"claims success 120 on {TRACK}, outside its domain: success is from 0 to 100 "
                                   "(% of attacked samples with a confirmed adversarial example)"),
    ({"success": 50, "r50": -0.5}, "claims r50 -0.5 on evasion-smoothing-digits-0.50, outside its domain: r50 is at "
                                   "least 0 (median radius"),
    ({"success": 50, "r50": float("nan")}, "claims r50 nan"),
])
def test_validate_refuses_misspelled_metrics_and_values_outside_their_domain_before_anything_runs(
        tmp_path: Path, claims: dict, message: str) -> None:
    folder = submission(tmp_path, "idle", IDLE, "Idle", claims)
    with pytest.raises(RsbenchError) as refused:
        attack_submissions.validate(folder, root=SHIPPED)  # refused before anything runs, a sandbox or none
    assert message in str(refused.value) and "\n" not in str(refused.value)


def test_validate_refuses_an_unknown_track_and_a_name_an_entry_of_a_claimed_track_has(tmp_path: Path) -> None:
    folder = submission(tmp_path, "idle", IDLE, "Idle", {"success": 0, "r50": None})
    data = yaml.safe_load((folder / "submission.yaml").read_text())
    data["claims"] = {"evasion-smoothing-digits-0.55": data["claims"][TRACK]}
    (folder / "submission.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(RsbenchError, match=r"idle claims track 'evasion-smoothing-digits-0.55', which has no "
                                           r"leaderboard under .*; did you mean 'evasion-smoothing-digits-0.50'\?"):
        attack_submissions.validate(folder, root=SHIPPED)
    board = track_files.load(SHIPPED / TRACK / "v1.json")
    submitted = load_submission(submission(tmp_path / "other", "idle", IDLE, "Idle", {"success": 0, "r50": None}))
    registry_entry = board.entries[0].model_copy(update={"name": "idle"})  # a registry attack's run named idle
    with pytest.raises(RsbenchError, match=f"idle is already an entry of {TRACK} v1, from a registry attack's run; "
                                           "entries are never replaced"):
        claims.check_name(tmp_path / "other" / "idle", submitted, TRACK, board.model_copy(update={"entries": [registry_entry]}))
    own = registry_entry.model_copy(update={"source": track_files.Source(
        kind="submission", submission="idle", content_sha256=content_sha256(tmp_path / "other" / "idle"))})
    claims.check_name(tmp_path / "other" / "idle", submitted, TRACK, board.model_copy(update={"entries": [own]}))
    (tmp_path / "other" / "idle" / "idle.py").write_text(IDLE + "\n# changed\n")
    with pytest.raises(RsbenchError, match="from this submission's folder as it was then"):
        claims.check_name(tmp_path / "other" / "idle", submitted, TRACK, board.model_copy(update={"entries": [own]}))


@pytest.mark.slow
def test_validate_runs_one_sample_of_every_label_and_names_the_one_an_attack_fails_on(sandboxed: None,
                                                                                      tmp_path: Path) -> None:
    folder = submission(tmp_path, "raiser", RAISER, "Raiser", {"success": 0, "r50": None})
    with pytest.raises(RsbenchError) as refused:
        attack_submissions.validate(folder, root=SHIPPED, timeout=300)
    message = str(refused.value)
    assert message.startswith("raiser failed on smoke: attack raiser failed on sample ") and "\n" not in message
    assert message.endswith(" (label 1): ValueError: cannot attack ones")
    index = int(message.split("on sample ")[1].split()[0])
    _, dataset = submission_run.prepare(track_files.load(SHIPPED / TRACK / "v1.json"))
    assert int(dataset[index][1]) == 1 and all(int(dataset[i][1]) != 1 for i in range(index))  # beyond the first 2


@pytest.mark.slow
def test_measure_prints_claims_that_verify_accepts(sandboxed: None, root: Path, tmp_path: Path) -> None:
    folder = submission(tmp_path, "nearest-other", NEAREST_OTHER, "NearestOther", {"success": 0, "r50": None})
    data = yaml.safe_load((folder / "submission.yaml").read_text())
    (folder / "submission.yaml").write_text(yaml.safe_dump({k: v for k, v in data.items() if k != "claims"}))
    with pytest.raises(RsbenchError, match="nearest-other.*claims no track"):
        load_submission(folder)
    printed = attack_submissions.measure(folder, root, [TRACK], timeout=300)
    measured = yaml.safe_load(printed)["claims"]
    assert set(measured) == {TRACK} and measured[TRACK]["success"] == 100 and measured[TRACK]["r50"] > 1
    assert "# 95% interval [" in printed and "NOT" not in printed and "time_s" not in measured[TRACK]
    assert track_files.load(root / TRACK / "v1.json").entries == []  # measuring adds nothing
    seeds = yaml.safe_load(printed)["seeds"]
    assert set(seeds) == {TRACK} and set(seeds[TRACK]) == {"run", "judging"}
    (folder / "submission.yaml").write_text(yaml.safe_dump(data | {"claims": measured, "seeds": seeds}))
    [line] = attack_submissions.verify(folder, root, timeout=300, dry_run=True)
    assert line.startswith(f"{TRACK}: claims reproduced (success 100 [100, 100], r50 ")
    nudged = {TRACK: measured[TRACK] | {"r50": round(measured[TRACK]["r50"] * 1.01, 2)}}  # inside its interval
    (folder / "submission.yaml").write_text(yaml.safe_dump(data | {"claims": nudged, "seeds": seeds}))
    with pytest.raises(RsbenchError, match=f"claims r50 {nudged[TRACK]['r50']:g} on {TRACK}; its run reproduces "
                                           f"{measured[TRACK]['r50']:g} "):
        attack_submissions.verify(folder, root, timeout=300, dry_run=True)
    (folder / "submission.yaml").write_text(yaml.safe_dump(data | {"claims": measured, "seeds": seeds}))
    attack_submissions.verify(folder, root, timeout=300)
    [entry] = track_files.load(root / TRACK / "v1.json").entries
    assert entry.seed == seeds[TRACK]["run"] and entry.judging.seed != seeds[TRACK]["judging"]  # judged on new noise
    partial = attack_submissions.measure(folder, root, samples=1, timeout=300)  # the claimed tracks, by default
    assert "NOT the tracks' protocols: evasion-smoothing-digits-0.50 on its first 1 of 2 samples" in partial
    assert yaml.safe_load(partial)["claims"][TRACK]["success"] == 100
