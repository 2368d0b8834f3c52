"""What the harness derives itself: a submission's records from the examples it returned, and whether a
stored entry's records are what the dataset, the track's clean certificates and its examples give.

A submission's run is never read for a judged fact. Which samples are attacked comes from the track's
clean certificates, x and the label from the dataset at that index, and each returned example (one per
attacked sample at most) is judged here (`verdicts.admitted`) on noise from a seed drawn once the
submission has finished; success, radii and distances, certificates and SSIM are computed here. What
only the attack can know (its times, iterations, candidates asked about, its first example and the
target it chose) is copied from its own records and marked self-reported.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import Dataset

from rsbench import runner
from rsbench.defenses.base import Defense
from rsbench.errors import RsbenchError
from rsbench.goals.degradation import DegradationRecord
from rsbench.goals.evasion import judge_view
from rsbench.goals.spoofing import SpoofingRecord, l2, linf, spoofed, ssim, tv
from rsbench.leaderboard.track_files import Leaderboard, goal_class
from rsbench.leaderboard.verdicts import admitted, distance, in_threat_model
from rsbench.progress import each
from rsbench.records import AttackRecord, SampleRecord

SELF_REPORTED = {"evasion": ["time_s", "total_time_s", "first_ratio_r50", "first_ratio_time"], "degradation": [],
                 "spoofing": []}
"""Per goal, the metrics a submission's entry computes from what the attack reported about itself."""
RADIUS_TOLERANCE = {"rel_tol": 0.05, "abs_tol": 0.01}
"""How far a stored clean radius may lie from the one recomputed here: the same noise on another device (a GPU
run checked on a CPU) can give a vote or two more or less, which near a probability of 1 moves a radius by a few
percent; a radius made up by hand lies further off."""


def attacked(board: Leaderboard, clean: Sequence[SampleRecord]) -> list[SampleRecord]:
    """The clean certificates of the samples the track's goal attacks."""
    config = board.protocol.run_config([])
    return [c for c in clean if goal_class(board.protocol.goal).qualifies(config, c)]


def sample(dataset: Dataset, clean: SampleRecord) -> tuple[torch.Tensor, int]:
    """The dataset's x and label at a clean certificate's index, refused when its label is not the dataset's."""
    x, label = dataset[clean.index]
    if int(label) != clean.label:
        raise RsbenchError(f"sample {clean.index}: the certificate's label {clean.label} is not the dataset's "
                           f"{int(label)}")
    return x, int(label)


def cohen_radius(board: Leaderboard, defense: Defense, x: torch.Tensor, index: int, clean: SampleRecord) -> float:
    """The clean sample's certificate an evasion record compares with, exactly as the engine computes it."""
    if board.defense.kind != "smoothing":
        return clean.radius
    view = judge_view(defense, board.protocol.run_config([]))
    return view.hard_radius(x.to(defense.device), runner.stream(board.protocol.seed, index, "", "cohen", defense.device))


def _times_ok(*values: float | None) -> bool:
    return all(v is None or math.isfinite(v) and v >= 0 for v in values)


def rebuild(board: Leaderboard, defense: Defense, dataset: Dataset, clean: Sequence[SampleRecord], name: str,
            proposals: dict[int, torch.Tensor], reports: dict[int, Any], seed: int) -> tuple[list, dict | None]:
    """A submission's records and examples to store, judged here on streams of `seed`.

    `proposals` maps a sample's index to the example the attack returned for it, `reports` to the
    attack's own record of it (read for self-reported fields only). Refused with one line: a sample
    without a report, an example on a sample the track does not attack, self-reports that contradict
    the judged example (a first example smaller than it, negative times).
    """
    targets = attacked(board, clean)
    extra = sorted(set(proposals) - {c.index for c in targets})
    if extra:
        raise RsbenchError(f"{name} returned examples of samples {extra}, which the track does not attack")
    missing = [c.index for c in targets if c.index not in reports]
    if missing:
        raise RsbenchError(f"{name} has no record of samples {missing}, which the track attacks")
    goal = board.protocol.goal
    build = {"evasion": _evasion, "degradation": _degradation, "spoofing": _spoofing}[goal]
    records, kept = [], []
    for c in each(targets, f"judge {name}", "sample"):
        x, label = sample(dataset, c)
        x_adv = proposals.get(c.index)
        noise = runner.stream(seed, c.index, name, "certify" if goal == "spoofing" else "confirm", defense.device)
        record = build(board, defense, c, x, label, x_adv, reports[c.index], noise)
        records.append(record)
        if x_adv is not None and (record.success or goal == "spoofing"):
            kept.append((c.index, x, x_adv))
    if not kept:
        return records, None
    return records, {"index": torch.tensor([k for k, _, _ in kept]), "x": torch.stack([x for _, x, _ in kept]),
                     "x_adv": torch.stack([a.to(torch.float32) for _, _, a in kept])}


def _evasion(board: Leaderboard, defense: Defense, clean: SampleRecord, x: torch.Tensor, label: int,
             x_adv: torch.Tensor | None, report: Any, noise: torch.Generator) -> AttackRecord:
    protocol = board.protocol
    if x_adv is not None and not report.success:
        raise RsbenchError(f"sample {clean.index}: an example was returned but the attack's record says it failed")
    success = x_adv is not None and admitted(board, defense, label, x, x_adv, noise)
    radius = distance(board.defense.norm, x, x_adv) if success else None
    if success and (report.first_radius is None or report.first_radius < radius * (1 - 1e-3) - 1e-6):
        raise RsbenchError(f"sample {clean.index}: the attack reports a first example at {report.first_radius}, "
                           f"below its smallest one, which lies at {radius:.4f}")
    if not _times_ok(report.first_time_s, report.best_time_s, report.total_time_s):
        raise RsbenchError(f"sample {clean.index}: the attack reports negative or undefined times")
    smoothing = board.defense.kind == "smoothing"
    return AttackRecord(
        index=clean.index, label=label, attack=report.attack, success=success,
        first_radius=report.first_radius if success else None, first_time_s=report.first_time_s if success else None,
        best_radius=radius, best_time_s=report.best_time_s if success else None, total_time_s=report.total_time_s,
        cohen_radius=cohen_radius(board, defense, x, clean.index, clean), iterations=report.iterations,
        judge_calls=report.judge_calls, candidates=int(x_adv is not None), rejected=int(x_adv is not None) - success,
        judge_n=protocol.judge_n if smoothing else None, judge_alpha=protocol.judge_alpha if smoothing else None,
        confirm_n=protocol.confirm_n if smoothing else None,
    )


def _degradation(board: Leaderboard, defense: Defense, clean: SampleRecord, x: torch.Tensor, label: int,
                 x_adv: torch.Tensor | None, report: Any, noise: torch.Generator) -> DegradationRecord:
    eps = board.protocol.epsilon
    if x_adv is not None and not report.judged:
        raise RsbenchError(f"sample {clean.index}: an example was returned that the attack's in-loop check never saw")
    if not _times_ok(report.first_time_s, report.total_time_s):
        raise RsbenchError(f"sample {clean.index}: the attack reports negative or undefined times")
    success = x_adv is not None and admitted(board, defense, label, x, x_adv, noise)
    return DegradationRecord(
        index=clean.index, label=label, attack=report.attack, epsilon=eps, in_test_R=True,
        certified_2eps=clean.radius >= 2 * eps, judged=x_adv is not None, success=success,
        distance=distance(board.defense.norm, x, x_adv) if success else None,
        first_time_s=report.first_time_s if success else None, total_time_s=report.total_time_s,
        iterations=report.iterations, judge_calls=report.judge_calls,
    )


def _spoofing(board: Leaderboard, defense: Defense, clean: SampleRecord, x: torch.Tensor, label: int,
              x_adv: torch.Tensor | None, report: Any, noise: torch.Generator) -> SpoofingRecord:
    if x_adv is None:
        raise RsbenchError(f"sample {clean.index}: a spoofing attack must return an image for every attacked sample")
    if not _times_ok(report.total_time_s):
        raise RsbenchError(f"sample {clean.index}: the attack reports negative or undefined times")
    certificate = defense.certify(x_adv.to(defense.device), generator=noise)
    eps = None if board.defense.kind == "smoothing" else board.protocol.epsilon
    outcome = dict(label=label, natural_prediction=clean.prediction, natural_radius=clean.radius,
                   adv_prediction=certificate.prediction, adv_radius=certificate.radius)
    record = SpoofingRecord(
        index=clean.index, attack=report.attack, **outcome, target=report.target,
        attack_prediction=report.attack_prediction, attack_radius=report.attack_radius, epsilon=eps, success=False,
        l2=l2(x, x_adv), linf=linf(x, x_adv), tv=tv(x, x_adv), ssim=ssim(x, x_adv),
        total_time_s=report.total_time_s, iterations=report.iterations,
    )
    return record.model_copy(update={"success": spoofed(record, eps or 0.0)})


def check_entry(board: Leaderboard, defense: Defense, dataset: Dataset, clean: Sequence[SampleRecord], name: str,
                records: Sequence[Any], examples: dict | None) -> None:
    """Refuse, with one line, a stored entry whose records are not what the dataset, the track's clean
    certificates and its examples give: a record per attacked sample (no more, no fewer), the dataset's
    labels, the dataset's x in every example, and every success's distances measured on its example."""
    where = f"{board.track} v{board.version} entry {name}"
    targets = attacked(board, clean)
    if sorted(r.index for r in records) != [c.index for c in targets] or any(r.attack != name for r in records):
        raise RsbenchError(f"{where}: its records are not one per sample the track attacks")
    rows = {} if examples is None else {int(i): k for k, i in enumerate(examples["index"].tolist())}
    if examples is not None and len(rows) != len(examples["index"]):
        raise RsbenchError(f"{where}: a sample has two examples")
    by_index = {c.index: c for c in targets}
    for r in records:
        x, label = sample(dataset, by_index[r.index])
        if r.label != label:
            raise RsbenchError(f"{where}: sample {r.index}'s record has label {r.label}, the dataset {label}")
        row = rows.get(r.index)
        if row is not None and not torch.equal(examples["x"][row].to(torch.float32), x.to(torch.float32)):
            raise RsbenchError(f"{where}: the example of sample {r.index} does not start from the dataset's x")
        if r.success and row is None:
            raise RsbenchError(f"{where}: sample {r.index}'s success has no stored example")
        if row is not None and r.success:
            _check_measures(board, where, r, x, examples["x_adv"][row])
        if board.protocol.goal == "evasion":
            expected = cohen_radius(board, defense, x, r.index, by_index[r.index])
            if not math.isclose(r.cohen_radius, expected, **RADIUS_TOLERANCE):
                raise RsbenchError(f"{where}: sample {r.index}'s clean certificate is {expected:.4f}, its record "
                                   f"says {r.cohen_radius:.4f}")


def _check_measures(board: Leaderboard, where: str, r: Any, x: torch.Tensor, x_adv: torch.Tensor) -> None:
    goal, norm = board.protocol.goal, board.defense.norm
    measured: dict[str, tuple[float, float | None]] = {}
    if goal == "evasion":
        measured["best_radius"] = (distance(norm, x, x_adv), r.best_radius)
    elif goal == "degradation":
        measured["distance"] = (distance(norm, x, x_adv), r.distance)
    else:
        measured |= {"l2": (l2(x, x_adv), r.l2), "linf": (linf(x, x_adv), r.linf), "ssim": (ssim(x, x_adv), r.ssim),
                     "tv": (tv(x, x_adv), r.tv)}
    for field, (value, stored) in measured.items():
        if stored is None or not math.isclose(value, stored, rel_tol=1e-3, abs_tol=1e-5):
            raise RsbenchError(f"{where}: sample {r.index}'s example gives {field} {value:.4f}, its record {stored}")
    if goal != "spoofing" and not in_threat_model(board, x, x_adv):
        raise RsbenchError(f"{where}: sample {r.index}'s example lies outside [0, 1] or the ball of epsilon")


def same_records(where: str, stored: Sequence[Any], again: Sequence[Any]) -> None:
    """Refuse, with one line, stored records that are not what running their attack again with their seeds gave
    (`again`), times aside (the running machine measures those)."""
    by_index = {r.index: r for r in stored}
    if sorted(by_index) != sorted(r.index for r in again):
        raise RsbenchError(f"{where}: running it again attacks other samples than its records")
    for fresh in again:
        field = differing(by_index[fresh.index].model_dump(), fresh.model_dump())
        if field is not None:
            raise RsbenchError(f"{where}: sample {fresh.index}'s record says {field} "
                               f"{by_index[fresh.index].model_dump()[field]}, running its attack again with its seeds "
                               f"gives {fresh.model_dump()[field]}; refused")


def differing(stored: dict[str, Any], fresh: dict[str, Any]) -> str | None:
    """The first field (times aside, which are measured) in which two records differ beyond float rounding."""
    for field, value in fresh.items():
        if field.endswith("time_s"):
            continue
        other = stored.get(field)
        if isinstance(value, float) and isinstance(other, float):
            if not math.isclose(value, other, rel_tol=1e-4, abs_tol=1e-6):
                return field
        elif value != other:
            return field
    return None
