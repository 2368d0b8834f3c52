"""The five seed papers' numbers that benchmarks/paper_tables.py sets beside rsbench's, each with its source and
the settings on both sides (the like-for-like columns). Typed once from the papers in shared/papers/ (and, where
a number is from elsewhere, from the source its constant names); rsbench's side is always read from stored
records, never from here."""

from __future__ import annotations

TRAINED_HERE = ("5,000 training images (MNIST test images 5000-9999) instead of MNIST's 60,000; evaluated on "
                "test images 0-4999")

# The certification-aware-attack paper, Table 1 (MNIST rows) and Table 4 (MACER; CIFAR-10 rows only):
# success %, best %, r50, %-Cohen, time (s), Ratio(r50), Ratio(Time).
CAA_TABLE_1 = {
    "smoothing-mnist-0.50": ("M-0.5", {
        "caa": (75, 71, 1.95, 67, 5.49, 1.10, 0.23), "pgd": (65, 6, 1.95, 69, 8.95, 1.00, 0.34),
        "cw": (94, 25, 8.19, 612, 5.29, 1.63, 0.02), "autoattack": (31, 2, 1.95, 100, 174.87, 1.00, 1.00),
        "deepfool": (5, 1, 9.20, 2107, 0.66, 1.00, 1.00)}),
    "smoothing-mnist-1.00": ("M-1.0", {
        "caa": (100, 89, 2.41, 66, 2.87, 1.09, 0.43), "pgd": (98, 4, 2.75, 88, 8.92, 1.00, 0.43),
        "cw": (94, 0, 8.83, 505, 4.49, 1.51, 0.03), "autoattack": (90, 6, 3.05, 100, 174.08, 1.00, 1.00),
        "deepfool": (47, 0, 12.80, 1409, 0.65, 1.00, 1.00)}),
}
CAA_TABLE_4 = {
    "macer-mnist-0.50": ("C-0.5 (CIFAR-10: Table 4 has no MNIST row)", {
        "caa": (92, 92, 1.56, 1148, 19.33, 1.08, 0.55), "pgd": (100, 0, 15.58, 11912, 26.32, 1.00, 0.02),
        "cw": (87, 2, 11.58, 7242, 3.37, 1.23, 0.10), "deepfool": (100, 5, 4.28, 3353, 11.51, 1.00, 1.00)}),
}
CAA_SOURCE = "the certification-aware-attack paper (shared/papers/certification-aware-attack.txt), {}"
CAA_COMMON = [
    ("success rule", "one Goodman test on 1,500 copies, alpha 0.005", ("strict: that test, then confirmation on "
     "15,000 fresh copies with the judge's bounds (ranks); the paper's rule beside it, from the same records")),
    ("threat model", "l2, minimum norm, smoothed classifier", "l2, minimum norm, smoothed classifier"),
    ("samples", "not stated in the text", "the first 100 test-eval images; n attacked in each row"),
    ("attack settings", "100 iterations; DeepFool overshoot 0.02 (App. C)",
     ("the registry's caa, pgd, deepfool specs (rsbench's own PGD and DeepFool; its DeepFool steps on until the "
      "harness accepts an iterate, classic DeepFool stops at the first flip: deepfool-classic, measured below)")),
    ("hardware", "one P100 GPU", "one shared CPU thread"),
]
CAA_SETTINGS_1 = [
    ("dataset", "MNIST", "MNIST test images 0-4999 (test-eval)"),
    ("model", "ResNet-18 (Section 4)", "kw-mnist-cnn: 2 convolutions, 166k parameters"),
    ("training set", "MNIST's 60,000 training images", "5,000 images (MNIST test images 5000-9999)"),
    *CAA_COMMON,
]
CAA_SETTINGS_4 = [
    ("dataset", "CIFAR-10 (Table 4 has no MNIST row)", "MNIST test images 0-4999 (test-eval)"),
    ("model", "ResNet-110 trained with MACER (Appendix F)",
     "kw-mnist-cnn fine-tuned with MACER from smoothing-mnist-0.50"),
    ("training set", "CIFAR-10's 50,000 training images", "5,000 images (MNIST test images 5000-9999)"),
    *CAA_COMMON,
]
CAA_CLAIM = ("the abstract: \"in all bar one experiment\" CAA finds smaller examples \"for more than 70% of tested "
             "samples\" (over MNIST, CIFAR-10 and Tiny-ImageNet together, not a claim about MNIST alone)")
CAA_ATTACKS = ("caa", "pgd", "cw", "autoattack", "deepfool")
"""The paper's five attacks; `best` is recomputed among those of them a track holds."""

# The degradation paper, Table 1 (GloRo, MNIST): VRA %, FPR lower bound %, utility reduction %.
DEGRADATION_SOURCE = "the degradation-attacks paper (shared/papers/degradation-attacks.txt), Table 1 and Figure 2"
DEGRADATION_SETTINGS = [
    ("dataset", "MNIST test set", "MNIST test images 0-4999 (test-eval)"),
    ("model", "GloRo 2C2F (eps 0.3), 4C3F (eps 1.58), GloRo's code", "GloRo 2C2F and 4C3F at half width, rsbench's"),
    ("training set", "MNIST's 60,000 training images", "5,000 images (MNIST test images 5000-9999)"),
    ("rule", "FPR lower bound: Algorithm 3.1's attack", "FPR lower bound: degradation-pgd, judged by rsbench"),
    ("threat model", "l2, certified run-time defense", "l2, certified run-time defense"),
    ("samples", "the test set", "the first 100 test-eval images"),
]
DEGRADATION_TABLE_1 = {"gloro-mnist-0.30": ("2C2F, eps 0.3", 95.0, 6.0, 5.7),
                       "gloro-mnist-1.58": ("4C3F, eps 1.58", 61.8, 56.1, 34.7)}
DOUBLED = {"gloro-mnist-0.30": "gloro-mnist-0.60", "gloro-mnist-1.58": "gloro-mnist-3.16",
           "crownibp-mnist-0.2": "crownibp-mnist-0.4"}
"""Figure 2: the model trained at 2 eps beside the one trained at eps (the paper's GloRo pairs; the same doubling
for CROWN-IBP is rsbench's own)."""

# CROWN-IBP verified accuracies on MNIST (DM-large, IBP-verified): clean %, verified %, accuracy under attack %.
CROWN_IBP_SOURCE = ("not one of rsbench's five seed papers: the table of released CROWN-IBP MNIST models in the README "
                    "of the deepmind/interval-bound-propagation repository, as this script has carried it since its "
                    "first version (rsbench does not re-check those figures)")
CROWN_IBP = [("crownibp-mnist-0.2", 0.2, 0.1, 99.03, 97.75, 98.34), ("crownibp-mnist-0.2", 0.2, 0.2, None, None, None),
             ("crownibp-mnist-0.4", 0.4, 0.2, 98.38, 96.13, 97.28), ("crownibp-mnist-0.4", 0.4, 0.3, 98.38, 93.32, 96.38),
             ("crownibp-mnist-0.4", 0.4, 0.4, 98.38, 87.51, 94.95)]
"""(defense, training eps, eps, clean, verified, under attack); None: the paper reports no such row."""

# The Shadow Attack paper, Table 2 (CROWN-IBP on CIFAR-10): robust error and attack error, min / mean / max over
# the authors' model families.
SHADOW_TABLE_2 = [("2/255, 9 small", (52.46, 57.55, 60.67), (45.90, 53.89, 65.74)),
                  ("2/255, 8 large", (52.52, 53.90, 56.05), (46.21, 49.77, 51.79)),
                  ("8/255, 9 small", (71.28, 72.15, 73.66), (63.43, 66.94, 71.02)),
                  ("8/255, 8 large", (70.79, 71.17, 72.29), (64.04, 67.32, 71.16))]

SHADOW_SOURCE = "the Shadow Attack paper (shared/papers/shadow-attack-spoofed-certificates.txt), Table 2 and Section 5"
SHADOW_SETTINGS = [
    ("dataset", "CIFAR-10", "MNIST test images 0-4999 (test-eval)"),
    ("model", "CROWN-IBP model families (9 small, 8 large)", "crownibp-mnist-0.2 and -0.4, rsbench-trained"),
    ("threat model", "l_inf 2/255 and 8/255", "l_inf 0.2 and 0.4"),
    ("learning rate", "200, 300 steps (code: on a batch-mean loss, cut to 1/3 and 1/9)",
     ("shadow-crownibp: 200 on one image's loss; -pixel: 0.0133 (that step per image in [0, 1] pixels); "
      "-pixel-cuts: that step with the code's cuts after 150 and 250 steps; shadow-1ch: 0.1; 300 steps each")),
    ("penalties", "1-channel; lambda_tv 9e-6, lambda_c 0.02 on ||d||_2",
     ("shadow-crownibp: the same; -pixel: 0.405, 4.24 (carried over likewise); shadow-1ch: Section 3's "
      "(0.3, 1.0 on channel means)")),
    ("success rule", "wrong label certified at eps (code: by IBP)",
     "wrong label certified at eps by the larger of IBP and CROWN-IBP"),
    ("samples", "the test set",
     "the first 100 test-eval images (-pixel, -pixel-cuts: 20), the correct and certified ones attacked")]

GLORO_SHADOW_SOURCE = ("the Shadow Attack paper attacks smoothing (l2, Table 1) and CROWN-IBP (l_inf, Table 2), "
                       "not GloRo")
GLORO_SHADOW_SETTINGS = [
    ("model", "none", "gloro-mnist-0.30 and -1.58, rsbench-trained"),
    ("threat model", "none (l2 on smoothing, l_inf on CROWN-IBP)", "l2 0.3 and 1.58"),
    ("attack settings", "Section 3 (smoothing)", "shadow-1ch: Section 3's penalties, lr 0.1, 300 steps")]

# The certification-aware-attack paper, Table 3 (MNIST rows, sigma 0.5): CAA's cutoff c against
# (successful %, first r50, best r50, first t50 in s).
CAA_TABLE_3 = {0.05: (45.0, 1.646, 1.617, 4.44), 0.25: (65.0, 1.988, 1.874, 1.51), 0.5: (71.5, 2.149, 1.942, 1.16),
               0.75: (75.0, 2.345, 1.962, 1.07), 1.0: (75.5, 2.426, 1.972, 1.07), 1.5: (74.5, 2.687, 1.993, 0.97),
               3.0: (74.0, 3.257, 2.020, 0.97)}
SWEEP_COMMON = [
    ("model", "ResNet-18 (Section 4)", "kw-mnist-cnn: 2 convolutions, 166k parameters (smoothing-mnist-0.50)"),
    ("success rule", "one Goodman test on 1,500 copies, alpha 0.005", ("both, from the same records: the paper's "
     "(the judge's test on 1,500 copies) and the strict one (that, then confirmation on 15,000 fresh copies)")),
    ("hardware", "one P100 GPU", "one shared CPU thread (a Ray worker)"),
]
CAA_TABLE_3_SETTINGS = [
    ("dataset", "MNIST, sigma 0.5", "MNIST test images 0-4999 (test-eval), sigma 0.5"),
    ("training set", "MNIST's 60,000 training images", "5,000 images (MNIST test images 5000-9999)"),
    *SWEEP_COMMON,
    ("attack settings", "Algorithm 1, c varied", "the registry's caa with c varied (benchmarks/registry/attacks)"),
]
CAA_TABLE_3_COMMAND = ("RSBENCH_REGISTRY=benchmarks/registry rsbench sweep --defense smoothing-mnist-0.50 --attack "
                       "'caa-c*' --num-samples 30 --n 10000 --backend ray --root benchmarks/results/caa-cutoff-mnist")

# The certification-aware-attack paper, Table 2 (CIFAR-10, sigma 0.5; the paper has no MNIST version): each
# attack's r50, attacked % and time (s) with N noise copies per expectation.
NOISE_COUNTS = (250, 500, 750, 1000, 2000)
CAA_TABLE_2 = {
    "caa": ((0.94, 0.84, 0.85, 0.82, 0.79), (96, 97, 97, 99, 98), (1.2, 1.6, 2.6, 4.5, 7.1)),
    "pgd": ((1.04, 0.94, 0.89, 0.9, 0.87), (95, 96, 96, 96, 96), (0.6, 0.8, 1.1, 1.4, 1.9)),
    "cw": ((6.41, 6.45, 6.46, 6.41, 6.34), (93, 92, 93, 94, 94), (1.9, 2.8, 4.0, 5.2, 7.4)),
    "deepfool": ((2.18, 1.91, 1.83, 1.84, 1.81), (76, 82, 81, 81, 85), (0.3, 0.4, 0.7, 0.9, 1.1)),
}
CAA_TABLE_2_SETTINGS = [
    ("dataset", "CIFAR-10, sigma 0.5", "MNIST test images 0-4999 (test-eval), sigma 0.5"),
    ("training set", "CIFAR-10's 50,000 training images", "5,000 images (MNIST test images 5000-9999)"),
    *SWEEP_COMMON,
    ("attack settings", "N copies per expectation in each attack, C-W too",
     ("the registry's caa, pgd and deepfool with num_noise = N (benchmarks/registry/attacks); C-W left out "
      "(its cost: the cost table)")),
]
CAA_TABLE_2_COMMAND = ("RSBENCH_REGISTRY=benchmarks/registry rsbench sweep --defense smoothing-mnist-0.50 --attack "
                       "'*-n[0-9]*' --num-samples 30 --n 10000 --backend ray "
                       "--root benchmarks/results/noise-samples-mnist")

SLOW_ROWS = ("too slow for rsbench's 2 CPU cores (CPU cost in the README's table of paper rows); on a GPU, "
             "benchmarks/gpu_mnist_rows.sh adds it; on a Ray cluster: rsbench sweep --defense 'smoothing-mnist-*' "
             "--attack {} --num-samples 100 --n 10000 --save-examples --backend ray --address ADDRESS, then rsbench "
             "leaderboard add on each run folder")
"""Where a track lacks one of the paper's attacks: what it would cost, and the command that adds it."""

# What each of the certification-aware-attack paper's MNIST rows costs rsbench, and where its records are:
# (paper rows, rsbench attacks, where the records are: a track name or a folder under benchmarks/results, status).
COST_ROWS = [
    ("Table 1 (M-0.5): CAA, PGD, DeepFool", ("caa", "pgd", "deepfool"), "evasion-smoothing-mnist-0.50",
     "on the track, 100 images"),
    ("Table 1: C-W", ("cw",), "cost-probes-mnist",
     "not on the tracks (cost probe of 2 images; `benchmarks/gpu_mnist_rows.sh` adds it on a GPU)"),
    ("Table 1: AutoAttack", ("autoattack",), "cost-probes-mnist",
     "not on the tracks (cost probe of 1 image; `benchmarks/gpu_mnist_rows.sh` adds it on a GPU)"),
    ("Table 3, MNIST rows (7 cutoffs)", tuple(f"caa-c{c}" for c in CAA_TABLE_3), "caa-cutoff-mnist",
     "run"),
    ("Table 2 on MNIST (5 N, 3 attacks)", tuple(f"{a}-n{n}" for a in ("caa", "pgd", "deepfool") for n in NOISE_COUNTS),
     "noise-samples-mnist", "run"),
    ("Tables 1 and 4, best and r50 by the paper's rule: the tracks run again (M-0.5's times)",
     ("caa", "pgd", "deepfool"), "paper-rule-mnist", "run"),
]
