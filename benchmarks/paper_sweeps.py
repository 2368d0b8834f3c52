"""The certification-aware-attack paper's two sensitivity tables on MNIST, from `rsbench sweep` run folders: Table 3
(CAA's cutoff c) and Table 2 (the noise copies N each attack estimates its expectations with; the paper's is on
CIFAR-10). Each attack variant is a spec of benchmarks/registry/attacks, so the sweep's records say which c or N
made them; both success rules are counted from the same records, with 95% intervals (Clopper-Pearson for shares,
bootstrap over samples for medians)."""

from __future__ import annotations

import json
from pathlib import Path

import paper_numbers as papers
from paper_format import (Estimate, best_shares, judged_radius, median_estimates, percent, run_configs,
                          run_records, settings_rows, share, strict_radius, text, track)

from rsbench.records import AttackRecord

RESULTS = Path(__file__).resolve().parent / "results"
CUTOFF_RUNS = RESULTS / "caa-cutoff-mnist"
NOISE_RUNS = RESULTS / "noise-samples-mnist"
DEEPFOOL_RUNS = RESULTS / "deepfool-classic-mnist"
DEEPFOOL_COMMAND = ("RSBENCH_REGISTRY=benchmarks/registry rsbench sweep --defense smoothing-mnist-0.50 --attack "
                    "deepfool-classic --num-samples 30 --n 10000 --root benchmarks/results/deepfool-classic-mnist")
DEFENSE = "smoothing-mnist-0.50"
ATTACKED = 94
"""Of the first 100 test-eval images, those smoothing-mnist-0.50 classifies correctly and certifies (its track's
count)."""


def images_text(runs: Path) -> str:
    """Which test images the sweep's runs have finished (their clean certificates), out of those they were given."""
    done: set[int] = set()
    given = 0
    for config, samples in run_configs(runs, DEFENSE, "evasion"):
        clean = samples.with_name("clean.jsonl")
        done |= {json.loads(line)["index"] for line in clean.read_text().splitlines()} if clean.exists() else set()
        given = max(given, config["num_samples"])
    if not given:
        return "not run yet"
    if done == set(range(len(done))):
        short = f" (of the {given} the sweep was given)" if len(done) < given else ""
        return f"the first {len(done)} test-eval images{short}"
    return f"{len(done)} of the first {given} test-eval images"


def sweep_rows(title: str, runs: Path, source: str, settings: list, command: str) -> tuple[list[str], dict]:
    """A sweep table's heading, settings (the images read from the runs' configs) and its records by attack; when
    there are none, a line saying which command makes them."""
    lines = [title, *settings_rows(source, [*settings, ("samples", "not stated in the text",
                                                         f"{images_text(runs)}; n attacked in each row")])]
    found = run_records(runs, DEFENSE, "evasion")
    if found is None:
        lines.append(f"  rsbench: not run yet ({command})")
    return lines, found[1] if found else {}


def rule_rows(label: str, rows: list[AttackRecord]) -> tuple[str, str]:
    """A variant's success under the paper's rule (the judge accepted a candidate) and under the strict one."""
    return (f"  {label:<24}{'paper':<8}{share(sum(r.candidates > 0 for r in rows), len(rows)):>26}",
            f"  {label:<24}{'strict':<8}{share(sum(r.success for r in rows), len(rows)):>26}")


def table_3_rows(runs: Path = CUTOFF_RUNS) -> list[str]:
    """Table 3: success, first and best r50 and first t50 of CAA at each cutoff c, the paper's MNIST rows beside."""
    heads = ("success %", "first r50", "best r50", "first t50 (s)")
    lines, records = sweep_rows("Certification-aware-attack paper, Table 3 (CAA's cutoff c; MNIST, sigma 0.5)", runs,
                                papers.CAA_SOURCE.format("Table 3, MNIST rows"), papers.CAA_TABLE_3_SETTINGS,
                                papers.CAA_TABLE_3_COMMAND)
    lines.append(f"  {'c':<24}{'rule':<8}" + "".join(f"{h:>26}" for h in heads))
    found: dict[float, dict[str, Estimate]] = {}
    for c, paper in papers.CAA_TABLE_3.items():
        lines.append(f"  {f'{c:g} (paper)':<24}{'paper':<8}" + "".join(f"{v:>26g}" for v in paper))
        rows = records.get(f"caa-c{c}")
        if not rows:
            lines.append(f"  {f'{c:g} (rsbench)':<24}-")
            continue
        paper_rule, strict = rule_rows(f"{c:g} (rsbench)", rows)
        judged = text(median_estimates(rows, {"best": judged_radius})["best"])
        found[c] = median_estimates(rows, {"first": lambda r: r.first_radius, "best": lambda r: r.best_radius,
                                           "t50": lambda r: r.first_time_s})
        lines += [paper_rule + f"{'-':>26}{judged:>26}",
                  strict + "".join(f"{text(found[c][k]):>26}" for k in ("first", "best", "t50")) + f"  n={len(rows)}"]
    lines.append("  first r50 and first t50 under the paper's rule need the first accepted candidate's radius and "
                 "time, which records keep only for confirmed ones (-)")
    return lines + ([cutoff_line(found)] if len(found) > 1 else [])


def cutoff_line(found: dict[float, dict[str, Estimate]]) -> str:
    """What the strict columns say across c: whether any two best r50 intervals are apart, and how the first
    example's radius and time move from the smallest c to the largest."""
    best = [found[c]["best"] for c in found if found[c]["best"][0] is not None]
    apart = any(a[2] < b[1] for a in best for b in best)
    low, high = min(found), max(found)
    moves = "; ".join(f"median {name} {text(found[low][key])} at c = {low:g}, {text(found[high][key])} at c = {high:g}"
                      for key, name in (("first", "first radius"), ("t50", "first time (s)")))
    return (f"  measured (strict): the best r50 intervals {'do not all overlap' if apart else 'all overlap'} across "
            f"c; {moves}")


def table_2_rows(runs: Path = NOISE_RUNS) -> list[str]:
    """Table 2: each attack's success, r50 and time to its best example at each N, under both rules, and its `best`
    among the attacks run at that N (the paper's table has no such column)."""
    lines, records = sweep_rows("Certification-aware-attack paper, Table 2 (noise copies N per expectation; the "
                                "paper's on CIFAR-10, rsbench's on MNIST)", runs,
                                papers.CAA_SOURCE.format("Table 2 (CIFAR-10, sigma 0.5)"), papers.CAA_TABLE_2_SETTINGS,
                                papers.CAA_TABLE_2_COMMAND)
    lines.append(f"  {'attack, N':<24}{'rule':<8}" + "".join(f"{h:>26}" for h in ("success %", "best %", "r50",
                                                                                  "time (s)")))
    best, found = {}, {}
    for n in papers.NOISE_COUNTS:
        names = [name for name in (f"{a}-n{n}" for a in papers.CAA_TABLE_2) if name in records]
        best |= {(rule, name): value for rule, radius in (("paper", judged_radius), ("strict", strict_radius))
                 for name, value in best_shares(records, names, radius).items()}
    for attack, (r50s, attacked, times) in papers.CAA_TABLE_2.items():
        for n, r50, share_paper, time in zip(papers.NOISE_COUNTS, r50s, attacked, times):
            label, name = f"{attack} {n}", f"{attack}-n{n}"
            lines.append(f"  {label + ' (paper)':<24}{'paper':<8}{share_paper:>26}{'-':>26}{r50:>26}{time:>26}")
            rows = records.get(name)
            if not rows:
                lines.append(f"  {label + ' (rsbench)':<24}{'left out (cost)' if attack == 'cw' else '-'}")
                continue
            paper_rule, strict = rule_rows(label + " (rsbench)", rows)
            found[name] = median_estimates(rows, {"judged": judged_radius, "r50": strict_radius,
                                                  "time": lambda r: r.best_time_s})
            cells = {key: text(value) for key, value in found[name].items()}
            lines += [paper_rule + f"{percent(best.get(('paper', name))):>26}{cells['judged']:>26}",
                      strict + f"{percent(best.get(('strict', name))):>26}{cells['r50']:>26}{cells['time']:>26}"
                      f"  n={len(rows)}"]
    lines.append("  paper columns: success is the paper's 'Attacked'; best: % of the samples every attack at that N "
                 "attacked where this one's example is the smallest (ties credit each); rsbench's time is the median "
                 "seconds to the smallest example on one shared CPU thread, the paper's a P100's")
    return lines + noise_lines(found)


def noise_lines(found: dict[str, dict[str, Estimate]]) -> list[str]:
    """What the strict r50 of each attack does from the smallest N to the largest: both values, and whether their
    intervals are apart (the paper's r50 falls slowly with N)."""
    lines = []
    low, high = min(papers.NOISE_COUNTS), max(papers.NOISE_COUNTS)
    for attack in papers.CAA_TABLE_2:
        few, many = (found.get(f"{attack}-n{n}", {}).get("r50") for n in (low, high))
        if few is None or many is None or few[0] is None or many[0] is None:
            continue
        apart = few[2] < many[1] or many[2] < few[1]
        lines.append(f"  measured (strict): {attack} r50 {text(few)} at N = {low}, {text(many)} at N = {high}: the "
                     f"intervals {'are apart' if apart else 'overlap'}")
    return lines


def cost_markdown(root: Path, results: Path = RESULTS) -> str:
    """What each paper row costs on rsbench's CPU: the median seconds an attack ran on one sample (the records'
    total_time_s, wall time of one shared thread; the judge's and confirmation's copies and the clean certificate
    come on top) and the hours that makes for one model's 100 images, each attack variant run once."""
    lines = ["| paper rows | status | records | attack seconds a sample, median [95%] (n) | CPU-hours, 100 images |",
             "|---|---|---|---|---|"]
    for label, attacks, source, status in papers.COST_ROWS:
        if source.startswith("evasion-"):
            on_track = track(root, source)
            stored = on_track[2] if on_track else {}
        else:
            in_runs = run_records(results / source, DEFENSE, "evasion")
            stored = in_runs[1] if in_runs else {}
        rows = [r for a in attacks for r in stored.get(a, [])]
        status = f"{status} on {images_text(results / source)}" if status == "run" else status
        if not rows:
            lines.append(f"| {label} | {status} | {source} | - | - |")
            continue
        seconds = median_estimates(rows, {"t": lambda r: r.total_time_s})["t"]
        hours = seconds[0] * len(attacks) * ATTACKED / 3600
        lines.append(f"| {label} | {status} | {source} | {text(seconds)} ({len(rows)}) | {hours:.1f} |")
    return "\n".join(lines)


def stopping_rule_line(track_deepfool: list[AttackRecord], runs: Path = DEEPFOOL_RUNS) -> str:
    """Table 1's DeepFool gap, measured: rsbench's DeepFool steps on until the harness accepts an iterate; classic
    DeepFool (`deepfool-classic`, `stop_on_flip`) stops where the smoothed prediction first flips. Both on the same
    images (the run's), under both rules."""
    found = run_records(runs, DEFENSE, "evasion")
    classic = found[1].get("deepfool-classic", []) if found else []
    if not classic:
        return f"  DeepFool's stopping rule: not measured yet ({DEEPFOOL_COMMAND})"
    images = {r.index for r in classic}
    ours = [r for r in track_deepfool if r.index in images]

    def counts(rows: list[AttackRecord]) -> str:
        return (f"{share(sum(r.candidates > 0 for r in rows), len(rows))} by the paper's rule, "
                f"{share(sum(r.success for r in rows), len(rows))} strict")

    return (f"  measured, DeepFool's stopping rule on the {len(images)} attacked images of {images_text(runs)}: "
            f"stopping where the smoothed prediction first flips (classic DeepFool, deepfool-classic) succeeds on "
            f"{counts(classic)}; rsbench's deepfool, which steps on until the judge accepts, on {counts(ours)} "
            "(noise streams differ by attack name)")
