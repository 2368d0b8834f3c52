"""`leaderboard check --against BASE` on a pull-request-shaped git history: everything new is derived again.

The track here is real (smoothing-digits-0.50 under a light protocol: four samples, a judge of 200 copies
confirmed on 2000) and its honest entries are built with the harness's own judging of examples that are
images of other digits, so that every refusal below comes from what a hostile pull request changed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from rsbench import engine, registry, runner
from rsbench.errors import RsbenchError
from rsbench.gate import audit, provenance, rendered
from rsbench.leaderboard import admission, rederive, site, track_files, track_table
from rsbench.leaderboard.track_files import Leaderboard, Protocol, Source, StoredFile
from rsbench.records import AttackRecord
from rsbench.submissions import defense_submissions, submission_run
from rsbench.submissions.submission_spec import content_sha256

TRACK = "evasion-smoothing-digits-0.50"


def light_board(samples: int = 4) -> Leaderboard:
    spec = registry.get_defense("smoothing-digits-0.50")
    config = runner.run_config(spec, "evaluate", num_samples=samples, n0=100, n=1000, judge_n=200, confirm_n=2000,
                               goal="evasion")
    protocol = Protocol.of_run(config, spec.kind)
    return Leaderboard(track=TRACK, version=1, defense=spec, protocol=protocol, protocol_hash=protocol.spec_hash(),
                       clean=StoredFile(path="", sha256=""))


def add_entry(root: Path, name: str, examples_of: Callable[[torch.Tensor, int], torch.Tensor], *,
              by_hand: bool = False, tamper: Callable[[list, dict], tuple[list, dict]] | None = None) -> None:
    """An entry of registry attack `name` whose records the harness builds from `examples_of(x, label)`, or, `by_hand`,
    written as a hostile pull request would: every example a success at its true distance."""
    path = root / TRACK / "v1.json"
    board = track_files.load(path)
    defense, dataset = submission_run.prepare(board)
    if board.clean.path:
        clean = track_files.stored_records(path.parent, board)[0]
    else:
        samples = [(dataset[i][0], int(dataset[i][1]), i) for i in range(board.protocol.num_samples)]
        clean = runner.certify_samples(defense, samples, board.protocol.seed, defense.device)
    targets = rederive.attacked(board, clean)
    proposals = {c.index: examples_of(dataset[c.index][0], c.label) for c in targets}
    reports = {c.index: AttackRecord(
        index=c.index, label=c.label, attack=name, success=True, first_radius=100.0, first_time_s=1.0, best_radius=None,
        best_time_s=1.0, total_time_s=1.0, cohen_radius=0.0, iterations=1, judge_calls=1, candidates=1, rejected=0,
        judge_n=None, judge_alpha=None, confirm_n=None) for c in targets}
    records, examples = rederive.rebuild(board, defense, dataset, clean, name, proposals, reports, seed=7)
    if by_hand:
        distance = {i: float((a - dataset[i][0]).norm()) for i, a in proposals.items()}
        records = [r.model_copy(update={"success": True, "best_radius": distance[r.index], "rejected": 0,
                                        "first_radius": distance[r.index], "first_time_s": 1.0, "best_time_s": 1.0})
                   for r in records]
        examples = {"index": torch.tensor(list(proposals)), "x": torch.stack([dataset[i][0] for i in proposals]),
                    "x_adv": torch.stack(list(proposals.values()))}
    if tamper is not None:
        records, examples = tamper(records, examples)
    spec = registry.get_attack(name)
    entry = admission.NewEntry(spec, records, examples, Source(kind="registry"), runner.environment(defense.device),
                               None, "2026-01-01T00:00:00+00:00", board.protocol.seed)
    admission.admit(path, board, clean, [entry])


def another_digit(x: torch.Tensor, label: int) -> torch.Tensor:
    """The nearest test image of another class that the smoothed classifier certifies as its own: adversarial."""
    defense, dataset = submission_run.prepare(light_board())
    others = sorted((float((dataset[k][0] - x).norm()), k) for k in range(60) if int(dataset[k][1]) != label)
    for _, k in others:
        certificate = defense.certify(dataset[k][0], generator=torch.Generator().manual_seed(k))
        if certificate.prediction == int(dataset[k][1]) and certificate.radius > 0.3:
            return dataset[k][0]
    raise AssertionError("no confidently classified digit of another class")


def beside_another_digit(x: torch.Tensor, label: int) -> torch.Tensor:
    """`another_digit` moved a little off the segment from x: still adversarial, and not pgd's stored example."""
    return 0.999 * another_digit(x, label) + 0.001


def one_pixel(x: torch.Tensor, label: int) -> torch.Tensor:
    """x plus 0.1 in one pixel: not adversarial."""
    moved = x.clone()
    moved.view(-1)[0] += 0.1
    return moved


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                          capture_output=True, text=True, check=True)
    return done.stdout.strip()


@pytest.fixture(scope="module")
def base_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository whose base commit holds the light track with one honest registry entry (pgd)."""
    repo = tmp_path_factory.mktemp("base")
    track_files.save(repo / "leaderboards" / TRACK / "v1.json", light_board())
    add_entry(repo / "leaderboards", "pgd", another_digit)
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "base")
    return repo


@pytest.fixture
def repo(base_repo: Path, tmp_path: Path) -> Path:
    """A pull request's checkout: a copy of the base repository."""
    shutil.copytree(base_repo, tmp_path / "repo")
    return tmp_path / "repo"


def test_an_honest_new_entry_is_derived_and_judged_again_on_a_recorded_seed(repo: Path) -> None:
    root = repo / "leaderboards"
    add_entry(root, "caa", beside_another_digit)
    checked = audit.check(root, "HEAD")
    assert checked.new == [f"{TRACK} v1 caa"]
    agreement = checked.verification.agreement[f"{TRACK} v1 caa"]
    assert agreement[0] == agreement[1] >= 1
    replay = audit.check(root, "HEAD", seed=checked.verification.judging.seed)
    assert replay.verification.judging.seed == checked.verification.judging.seed and replay.verification.agreement == \
        checked.verification.agreement


def test_a_hand_made_entry_whose_examples_are_not_adversarial_is_refused(repo: Path) -> None:
    """Its records are consistent with its examples and the dataset; fresh noise refutes every success."""
    root = repo / "leaderboards"
    add_entry(root, "caa", one_pixel, by_hand=True)
    with pytest.raises(RsbenchError, match=rf"fresh noise refutes stored successes of {TRACK} v1 caa .*seed \d+"):
        audit.check(root, "HEAD")


def fake_x(records: list, examples: dict) -> tuple[list, dict]:
    """The forged run directory's trick: x moved next to the example, so that the recorded radius looks small."""
    x = examples["x_adv"] + 0.05 / 8
    return [r.model_copy(update={"best_radius": 0.05, "first_radius": 0.05}) for r in records], examples | {"x": x}


def fake_certificate(records: list, examples: dict) -> tuple[list, dict]:
    """A clean certificate made up so that the example's excess over it (pct_cohen) looks small."""
    return [r.model_copy(update={"cohen_radius": r.best_radius}) for r in records], examples


@pytest.mark.parametrize(("tamper", "reason"), [(fake_x, "does not start from the dataset's x"),
                                                (fake_certificate, "clean certificate is")])
def test_a_hand_made_entry_inconsistent_with_the_dataset_is_refused(repo: Path, tamper: Callable,
                                                                     reason: str) -> None:
    add_entry(repo / "leaderboards", "caa", another_digit, by_hand=True, tamper=tamper)
    with pytest.raises(RsbenchError, match=reason):
        audit.check(repo / "leaderboards", "HEAD", intervals=False)


def test_a_rewritten_comparison_block_is_refused(repo: Path) -> None:
    path = repo / "leaderboards" / TRACK / "v1.json"
    data = json.loads(path.read_text())
    assert data["comparison"]["best"]["pgd"]["value"] == 100
    data["comparison"]["best"]["pgd"] = {"value": 0.0, "ci_low": 0.0, "ci_high": 0.0}
    path.write_text(json.dumps(data))
    with pytest.raises(RsbenchError, match="comparison block"):
        audit.check(repo / "leaderboards", "HEAD")
    audit.check(repo / "leaderboards", "HEAD", intervals=False)  # point values alone cannot see it


def test_a_rewritten_interval_is_refused(repo: Path) -> None:
    path = repo / "leaderboards" / TRACK / "v1.json"
    data = json.loads(path.read_text())
    data["entries"][0]["metrics"]["r50"]["ci_low"] = 0.01
    path.write_text(json.dumps(data))
    git(repo, "commit", "-qam", "narrower")  # even once committed, the interval is not what the records give
    with pytest.raises(RsbenchError, match="entry pgd's metrics are not what its records give"):
        audit.check(repo / "leaderboards", "HEAD")


def test_an_entry_not_from_the_registry_or_a_submission_is_refused(repo: Path) -> None:
    root = repo / "leaderboards"
    add_entry(root, "caa", another_digit)
    path = root / TRACK / "v1.json"
    data = json.loads(path.read_text())
    data["entries"][1]["attack"]["params"]["iterations"] = 1  # not the registry's caa
    data["entries"][1]["attack_hash"] = registry.get_attack("caa").model_copy(
        update={"params": data["entries"][1]["attack"]["params"]}).spec_hash()
    path.write_text(json.dumps(data))
    with pytest.raises(RsbenchError, match="no registry attack has its spec"):
        audit.check(root, "HEAD")
    data["entries"][1]["source"] = {"kind": "submission", "submission": "caa", "commit": None,
                                    "content_sha256": "0" * 64}
    path.write_text(json.dumps(data))
    with pytest.raises(RsbenchError, match="no submission folder .* with the content hash"):
        audit.check(root, "HEAD")


def test_against_a_revision_that_does_not_resolve_fails(repo: Path) -> None:
    with pytest.raises(RsbenchError, match="'no-such-branch' does not resolve"):
        audit.check(repo / "leaderboards", "no-such-branch", intervals=False)
    git(repo, "checkout", "-q", "-b", "pr")
    assert audit.check(repo / "leaderboards", "master" if "master" in git(repo, "branch") else "main",
                       intervals=False).new == []


def test_new_entries_go_to_the_newest_version_only(repo: Path) -> None:
    root = repo / "leaderboards"
    newer = light_board().model_copy(update={"version": 2})
    newer = newer.model_copy(update={"protocol": newer.protocol.model_copy(update={"seed": 1})})
    track_files.save(root / TRACK / "v2.json", newer.model_copy(update={"protocol_hash": newer.protocol.spec_hash()}))
    add_entry(root, "caa", another_digit)  # written to v1 by hand, as a pull request could
    with pytest.raises(RsbenchError, match="new entries go to the track's newest version, v2"):
        audit.check(root, "HEAD", intervals=False)


def test_rendered_tables_that_no_track_file_backs_are_refused(repo: Path) -> None:
    """A pull request rewrites a number of the README, a track page, a picture; adds a page; removes one."""
    root = repo / "leaderboards"
    site.render(root)
    audit.check(root, "HEAD", intervals=False, pull_request=True)
    page = root / "site" / f"{TRACK}-v1.html"
    picture = next((root / "site").glob("*.png"))
    edits: list[Callable[[], None]] = [
        lambda: (root / "README.md").write_text((root / "README.md").read_text().replace("| pgd |", "| pgd (best) |")),
        lambda: page.write_text(page.read_text().replace("pgd", "my-attack")),
        lambda: picture.write_bytes(picture.read_bytes()[:-8]),
        lambda: (root / "site" / "extra.html").write_text("<p>leader: my-attack</p>"),
        lambda: page.unlink(),
    ]
    for edit in edits:
        before = {p: p.read_bytes() for p in [root / "README.md", *(root / "site").iterdir()]}
        edit()
        with pytest.raises(RsbenchError, match=r"the rendered tables are not what the track files give \(.+ differ\)"):
            audit.check(root, "HEAD", intervals=False, pull_request=True)
        (root / "site" / "extra.html").unlink(missing_ok=True)
        for path, data in before.items():
            path.write_bytes(data)
    assert audit.check(root, "HEAD", intervals=False, pull_request=True).new == []


def stored_examples(root: Path, name: str) -> dict[int, torch.Tensor]:
    """An entry's stored examples by sample index."""
    path = root / TRACK / "v1.json"
    entry = next(e for e in track_files.load(path).entries if e.name == name)
    examples = audit._examples(path, entry)
    return {i: examples["x_adv"][row] for row, i in enumerate(examples["index"].tolist())}


@pytest.mark.parametrize(("t", "says"), [(1.0, "equals pgd's stored example"),
                                         (0.999, r"lies 0\.999 of the way from x to pgd's stored example")])
def test_a_submitted_attack_assembled_from_another_entrys_examples_is_refused(repo: Path, t: float,
                                                                              says: str) -> None:
    """Per sample, pgd's stored example (or a point just short of it on the segment from x), shipped in the
    submission's folder: real adversarial examples, re-judged and upheld, just not the submission's."""
    root = repo / "leaderboards"
    pgd = stored_examples(root, "pgd")
    by_x = {i: submission_run.prepare(light_board())[1][i][0] for i in pgd}

    def copied(x: torch.Tensor, label: int) -> torch.Tensor:
        index = next(i for i, clean_x in by_x.items() if torch.equal(clean_x, x))
        return x + t * (pgd[index] - x)

    add_entry(root, "caa", copied, by_hand=True)
    folder = repo / "submissions" / "caa"
    folder.mkdir(parents=True)
    (folder / "pgd_examples.txt").write_text("copied from the leaderboards")
    path = root / TRACK / "v1.json"
    data = json.loads(path.read_text())
    data["entries"][1] |= {"source": {"kind": "submission", "submission": "caa", "commit": None,
                                      "content_sha256": content_sha256(folder)},
                           "judging": {"seed": 1, "date": "2026-01-01T00:00:00+00:00", "rsbench_version": "0",
                                       "git_commit": None},
                           "self_reported": rederive.SELF_REPORTED["evasion"]}
    path.write_text(json.dumps(data))
    with pytest.raises(RsbenchError, match=f"{TRACK} v1 entry caa: its example of sample \\d+ {says}; an entry is an "
                                           "attack's own run"):
        audit.check(root, "HEAD", intervals=False)


def test_a_pull_requests_registry_entry_is_run_again_and_its_records_compared(repo: Path, tmp_path: Path) -> None:
    """deepfool's entry made by running deepfool passes; one whose examples deepfool did not find is refused, even
    though every stored success is a real adversarial example that re-judging upholds."""
    root = repo / "leaderboards"
    path = root / TRACK / "v1.json"
    board = track_files.load(path)
    clean = track_files.stored_records(path.parent, board)[0]
    attack = registry.get_attack("deepfool")
    run = tmp_path / "run"
    run.mkdir()
    (run / "clean.jsonl").write_bytes(track_files.jsonl(clean))
    engine.evaluate(board.defense, [attack], board.protocol.run_config([attack]), run, torch.device("cpu"),
                    save_examples=True, progress=False)
    honest = tmp_path / "honest"
    shutil.copytree(repo, honest)
    admission.add_run(honest / "leaderboards", run)
    site.render(honest / "leaderboards")
    checked = audit.check(honest / "leaderboards", "HEAD", intervals=False, pull_request=True)
    assert checked.new == [f"{TRACK} v1 deepfool"]
    add_entry(root, "deepfool", beside_another_digit)
    site.render(root)
    audit.check(root, "HEAD", intervals=False)  # its successes hold on fresh noise
    with pytest.raises(RsbenchError, match=f"{TRACK} v1 entry deepfool: sample \\d+'s record says .*, running its "
                                           "attack again with its seeds gives .*; refused"):
        audit.check(root, "HEAD", intervals=False, pull_request=True)


def test_times_no_trusted_job_measured_are_marked_self_reported_on_every_table(repo: Path) -> None:
    root = repo / "leaderboards"
    board = track_files.load(root / TRACK / "v1.json")
    [pgd] = board.entries
    assert pgd.source.kind == "registry" and pgd.self_reported == []
    assert {"time_s", "total_time_s"} <= track_table.self_reported(pgd)
    assert track_table.marked(pgd, "time_s", "0.5 s") == "0.5 s*" and track_table.marked(pgd, "success", "50") == "50"
    trusted = pgd.model_copy(update={"source": Source(kind="defense-submission", submission="x", content_sha256="0")})
    assert track_table.self_reported(trusted) == set()
    site.render(root)
    assert track_table.SELF_REPORTED_NOTE in (root / "README.md").read_text()
    assert "*" in (root / "site" / f"{TRACK}-v1.html").read_text().split("<tbody>")[1]


def test_a_new_track_version_takes_its_goals_standard_protocol(repo: Path) -> None:
    """A pull request adds v2 whose judge sees fewer copies than the standard's (easier successes): refused; the
    standard protocol itself passes, as does the newest version of every committed track."""
    root = repo / "leaderboards"
    spec = registry.get_defense("smoothing-digits-0.50")
    standard = defense_submissions.track_protocols(spec)[TRACK]
    easier = standard.model_copy(update={"judge_n": 100})
    track_files.save(root / TRACK / "v2.json", light_board().model_copy(update={
        "version": 2, "protocol": easier, "protocol_hash": easier.spec_hash()}))
    with pytest.raises(RsbenchError, match=f"{TRACK} v2: a new track version takes its goal's standard protocol "
                                           r"\(rsbench evaluate's defaults on the first 20 or 100 samples\); its "
                                           "judge_n differ; refused"):
        audit.check(root, "HEAD", intervals=False, pull_request=True)
    provenance.standard(TRACK, light_board().model_copy(update={"protocol": standard}))
    committed = Path(__file__).resolve().parents[1] / "leaderboards"
    newest = {path.parent.name: path for path in track_files.files(committed)}
    for path in newest.values():
        board = track_files.load(path)
        provenance.standard(board.track, board)


def test_the_rendering_check_reads_submitted_defenses_folders_as_rendering_does(tmp_path: Path) -> None:
    """A submitted defense's profile shows its authors and paper from its folder; rendering again to compare must
    read the same folder, or every honest pull request is refused for the profile it did not touch."""
    shipped = Path(__file__).resolve().parents[1]
    name = "aol-digits-graph"
    root = tmp_path / "leaderboards"
    for goal in ("evasion", "degradation", "spoofing"):
        shutil.copytree(shipped / "leaderboards" / f"{goal}-{name}", root / f"{goal}-{name}")
    shutil.copytree(shipped / "submissions" / "defenses" / name, tmp_path / "submissions" / "defenses" / name)
    site.render(root)
    assert "rsbench maintainers" in (root / "site" / f"defense-{name}.html").read_text()
    assert rendered.differences(root) == []
