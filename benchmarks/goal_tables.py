"""The degradation, evasion and spoofing tables of the shipped defenses on more samples than their tracks, which
docs/results/digits.md shows.

Each row of PLAN is one `rsbench evaluate` run (resumable, under --out/<goal>/<defense>/):

* degradation (the degradation paper's Tables 1, 2 and 4): VRA, FPR lower bound per attack,
  FPR upper bound, utility reduction; the GloRo and KW models trained for 2 epsilon are also
  evaluated at the smaller epsilon (Section 4.1, radius doubling);
* evasion of GloRo and KW: VRA against the empirical robust accuracy of epsilon-bounded PGD;
* spoofing (the Shadow Attack paper's Tables 1 and 2).

    python benchmarks/goal_tables.py --goal degradation [--samples 100] [--smoothing-n 10000]

Smoothing certificates use --smoothing-n noise samples (the registry's 100,000 is slow on a CPU);
`kw-mnist-0.1` runs when the MNIST test set and the released model are found ($RSBENCH_DATA).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rsbench import engine, registry, requirements, runner
from rsbench.errors import RsbenchError

DETERMINISTIC = [("gloro-digits-0.25", None), ("gloro-digits-0.50", None), ("gloro-digits-0.50", 0.25),
                 ("kw-digits-0.05", None), ("kw-digits-0.10", None), ("kw-digits-0.10", 0.05), ("kw-mnist-0.1", None)]
SMOOTHING = ["smoothing-digits-0.25", "smoothing-digits-0.50", "smoothing-digits-1.00"]
PLAN = {
    "degradation": [(name, ["degradation-pgd", "degradation-eps-pgd", "degradation-adaptive"], eps)
                    for name, eps in DETERMINISTIC]
    + [(name, ["degradation-pgd", "degradation-spgd", "degradation-adaptive"], None) for name in SMOOTHING],
    "evasion": [(name, ["pgd-l2" if name.startswith("gloro") else "pgd-linf"], eps) for name, eps in DETERMINISTIC
                if eps is None],
    "spoofing": [(name, ["shadow-1ch"], None) for name, eps in DETERMINISTIC if eps is None]
    + [(name, ["shadow-1ch"], None) for name in SMOOTHING]
    + [(name, ["shadow-1ch", "shadow"], None) for name in ("smoothing-rgbdigits-0.25", "smoothing-rgbdigits-0.50")],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--goal", choices=sorted(PLAN), required=True)
    parser.add_argument("--defense", action="append", help="only these defenses of the plan")
    parser.add_argument("--samples", type=int, default=100, help="first K test samples of deterministic defenses")
    parser.add_argument("--smoothing-samples", type=int, default=30, help="first K test samples of smoothing ones")
    parser.add_argument("--smoothing-n", type=int, default=10_000, help="noise samples of smoothing certificates")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=Path("runs/goal-tables"))
    args = parser.parse_args()
    device = runner.resolve_device(args.device)
    for name, attacks, epsilon in PLAN[args.goal]:
        if args.defense and name not in args.defense:
            continue
        spec = registry.get_defense(name)
        try:
            requirements.require(spec)
        except RsbenchError as missing:
            print(f"skipped: {missing}\n")
            continue
        specs = [registry.get_attack(a) for a in attacks]
        smoothing = spec.kind == "smoothing"
        config = runner.run_config(
            spec, "evaluate", num_samples=args.smoothing_samples if smoothing else args.samples,
            n=args.smoothing_n if smoothing else None, goal=args.goal,
            epsilon=runner.default_epsilon(spec, args.goal, epsilon), workers=args.workers,
            attacks=attacks, attack_hashes=[s.spec_hash() for s in specs],
        )
        out = args.out / args.goal / f"{name}-eps{config.epsilon}"
        result = engine.evaluate(spec, specs, config, out, device)
        print(engine.format_table(result) + "\n")


if __name__ == "__main__":
    main()
