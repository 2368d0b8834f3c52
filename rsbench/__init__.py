"""rsbench: how well do attacks break certified defenses? A reproducible benchmark."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("rsbench")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"


def load_defense(name, device="cpu"):  # noqa: ANN001, ANN201 - mirrors rsbench.defenses.load_defense
    """The defense registered under `name`, ready to certify (see `rsbench.defenses.load_defense`)."""
    from rsbench.defenses import load_defense as _load

    return _load(name, device)


def load_dataset(name, split="test", root=None):  # noqa: ANN001, ANN201 - mirrors rsbench.data.load_dataset
    """A dataset split with pixels in [0, 1] (see `rsbench.data.load_dataset`)."""
    from rsbench.data import load_dataset as _load

    return _load(name, split, root)


def evaluate(defense, attacks, **options):  # noqa: ANN001, ANN003, ANN201 - mirrors rsbench.api.evaluate
    """Run a goal's attacks on a defense (a registry name, a spec or a Defense built in Python) through the engine
    of `rsbench evaluate`; returns the RunResult (see `rsbench.api.evaluate`)."""
    from rsbench.api import evaluate as _evaluate

    return _evaluate(defense, attacks, **options)


def verify_exactly(defense, **options):  # noqa: ANN001, ANN003, ANN201 - mirrors rsbench.api.verify_exactly
    """Decide exactly, by a MILP, which test samples of a deterministic ReLU defense have an adversarial example in
    the l_inf ball; returns the run's ExactResult (see `rsbench.api.verify_exactly`)."""
    from rsbench.api import verify_exactly as _verify

    return _verify(defense, **options)
