import numpy as np
import pytest
import torch
from scipy.special import softmax
from scipy.stats import norm
from torch.utils.data import Subset

from rsbench import data, load_defense, models, registry
from rsbench.defenses.smoothing import Smoothing
from rsbench.errors import RsbenchError
from rsbench.specs import DefenseSpec
from rsbench.training import gaussian, macer

MACER_DEFENSES = sorted(
    name for name, spec in registry.all_specs("defenses").items() if spec.training and spec.training.recipe == "macer"
)


def reference_loss(
    logits: np.ndarray, labels: np.ndarray, sigma: float, beta: float, gamma: float
) -> tuple[float, float]:
    """The MACER terms in float64 numpy/scipy, one input at a time with an explicit hinge."""
    classification, robustness = 0.0, 0.0
    for z, y in zip(logits, labels):
        classification -= np.log(softmax(z, axis=-1).mean(axis=0)[y])
        p = softmax(beta * z, axis=-1).mean(axis=0)
        order = np.argsort(p)[::-1]
        if order[0] != y:
            continue  # misclassified: only the classification term counts
        margin = norm.ppf(p[order[0]]) - norm.ppf(p[order[1]])
        robustness += sigma / 2 * max(gamma - margin, 0.0)
    return classification / len(labels), robustness / len(labels)


def hand_made_logits() -> tuple[np.ndarray, np.ndarray]:
    """Five inputs, k = 3 copies, 4 classes; with beta = 4 the margins are 0.38, 7.3, (misclassified), 0.25, 1.73.

    With gamma = 1.5 the hinge is active on the first and fourth, zero on the second and fifth.
    """
    logits = np.array(
        [
            [[0.30, 0.10, 0.00, -0.2], [0.25, 0.15, 0.05, 0.0], [0.20, 0.20, -0.1, 0.1]],
            [[3.00, 0.00, 0.00, 0.00], [2.50, 0.50, 0.00, 0.0], [2.80, 0.10, 0.20, 0.0]],
            [[0.00, 0.40, 0.00, 0.00], [0.10, 0.50, 0.00, 0.0], [0.00, 0.30, 0.10, 0.0]],
            [[0.05, 0.00, 0.12, 0.00], [0.00, 0.02, 0.10, 0.0], [0.03, 0.00, 0.09, 0.0]],
            [[-0.5, 0.00, 0.00, 0.60], [0.00, 0.10, 0.00, 0.4], [0.20, 0.00, -0.3, 0.5]],
        ]
    )
    return logits, np.array([0, 0, 0, 2, 3])


def tiny_spec(**training: object) -> DefenseSpec:
    recipe = {"recipe": "macer", "epochs": 2, "batch_size": 50, "lr": 0.05, "seed": 3, **training}
    return DefenseSpec.model_validate(
        {
            "name": "macer-test",
            "kind": "smoothing",
            "dataset": {"name": "digits"},
            "architecture": "digits-cnn",
            "num_classes": 10,
            "sigma": 0.25,
            "weights": {"source": "file", "filename": "unused.pt", "sha256": "0" * 64},
            "training": recipe,
        }
    )


def test_loss_matches_an_independent_computation_including_the_hinge_zero_region() -> None:
    logits, labels = hand_made_logits()
    sigma, beta, gamma = 0.5, 4.0, 1.5
    expected = reference_loss(logits, labels, sigma, beta, gamma)
    p = softmax(beta * logits, axis=-1).mean(axis=1)
    margins = norm.ppf(np.sort(p, axis=1)[:, -1]) - norm.ppf(np.sort(p, axis=1)[:, -2])
    assert margins[0] < gamma < min(margins[1], margins[4]) and p[2].argmax() != labels[2]  # the intended cases
    got = macer.macer_loss(torch.from_numpy(logits), torch.from_numpy(labels), sigma, beta=beta, gamma=gamma)
    assert [float(t) for t in got] == pytest.approx(expected, rel=1e-10)
    assert expected[1] > 0


def test_inputs_beyond_the_hinge_contribute_nothing() -> None:
    logits, labels = hand_made_logits()
    kept = torch.from_numpy(logits[[2]]), torch.from_numpy(labels[[2]])  # misclassified only
    far = torch.from_numpy(logits[[1]]), torch.from_numpy(labels[[1]])  # margin above gamma only
    for x, y in (kept, far):
        _, robustness = macer.macer_loss(x, y, 0.5, beta=4.0, gamma=1.5)
        assert float(robustness) == 0.0


def test_robustness_gradient_matches_finite_differences() -> None:
    logits, labels = hand_made_logits()
    x = torch.from_numpy(logits).requires_grad_(True)
    y = torch.from_numpy(labels)
    # perturbations of 1e-6 keep every input on its side of the hinge, so the loss is smooth here
    assert torch.autograd.gradcheck(lambda z: macer.macer_loss(z, y, 0.5, beta=4.0, gamma=1.5)[1], (x,))
    assert torch.autograd.gradcheck(lambda z: macer.macer_loss(z, y, 0.5, beta=4.0, gamma=1.5)[0], (x,))


def test_saturated_probabilities_give_finite_gradients() -> None:
    # beta * logits this large round the top probability to exactly 1 in float32: PhiInv is infinite there
    logits = torch.tensor([[[60.0, 0.0, 0.0], [55.0, 0.0, 0.0]], [[0.3, 0.1, 0.0], [0.2, 0.25, 0.0]]])
    logits.requires_grad_(True)
    labels = torch.tensor([0, 0])
    classification, robustness = macer.macer_loss(logits, labels, 0.25, beta=16.0, gamma=8.0)
    (classification + 12 * robustness).backward()
    assert torch.isfinite(logits.grad).all()
    assert logits.grad[1].abs().sum() > 0


def test_options_are_checked() -> None:
    model, train_set = models.create_model("digits-cnn", 10), data.load_dataset("digits", "train")
    with pytest.raises(RsbenchError, match="unknown MACER option.*lamda"):
        macer.fit(model, train_set, tiny_spec(options={"k": 4, "lamda": 3.0}), torch.device("cpu"))
    with pytest.raises(RsbenchError, match="'warmup_epochs' must be an integer in"):
        macer.recipe_options(tiny_spec(epochs=2, options={"warmup_epochs": 2}))
    with pytest.raises(RsbenchError, match="'k' must be an integer"):
        macer.recipe_options(tiny_spec(options={"k": 1}))
    with pytest.raises(RsbenchError, match="must be a number"):
        macer.recipe_options(tiny_spec(options={"beta": "high"}))


def mean_loss(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, sigma: float, k: int
) -> tuple[float, float]:
    """(classification, robustness) averaged over 16 fixed draws of k copies: the expectation training lowers."""
    generator = torch.Generator().manual_seed(99)
    terms = []
    with torch.no_grad():
        for _ in range(16):
            noise = torch.randn((len(x), k, *x.shape[1:]), generator=generator)
            logits = model((x.unsqueeze(1) + sigma * noise).flatten(0, 1)).view(len(x), k, -1)
            terms.append(macer.macer_loss(logits, y, sigma, beta=16.0, gamma=8.0))
    return tuple(float(sum(t[i] for t in terms) / len(terms)) for i in (0, 1))


def digits_subset(size: int) -> tuple[Subset, torch.Tensor, torch.Tensor]:
    train_set = Subset(data.load_dataset("digits", "train"), range(size))
    x, y = (torch.stack(t) for t in zip(*(train_set[i] for i in range(size))))
    return train_set, x, y


def test_macer_lowers_its_loss_from_a_gaussian_model_and_yields_a_smoothing_base() -> None:
    train_set, x, y = digits_subset(200)
    spec = tiny_spec(epochs=3, batch_size=20, lr=0.001, options={"k": 4})
    torch.manual_seed(0)
    model = models.create_model("digits-cnn", 10)
    gaussian.fit(model, train_set, tiny_spec(recipe="gaussian", epochs=20, batch_size=20, lr=0.05), torch.device("cpu"))
    classification, robustness = mean_loss(model, x, y, spec.sigma, k=4)
    macer.fit(model, train_set, spec, torch.device("cpu"))
    tuned_classification, tuned_robustness = mean_loss(model, x, y, spec.sigma, k=4)
    assert tuned_robustness < 0.95 * robustness
    assert tuned_classification + 12 * tuned_robustness < classification + 12 * robustness
    assert not model.training

    smoothing = Smoothing(model, 10, spec.sigma, n0=20, n=200, alpha=0.01)
    generator = torch.Generator().manual_seed(0)
    certificates = [smoothing.certify(x[i], generator=generator) for i in range(20)]
    assert sum(c.prediction == int(y[i]) for i, c in enumerate(certificates)) >= 15
    assert all(c.radius >= 0 and (c.prediction is None) == (c.radius == 0) for c in certificates)


def test_training_is_seeded_and_starts_with_the_gaussian_recipe() -> None:
    train_set, _, _ = digits_subset(64)
    spec = tiny_spec(epochs=2, options={"k": 2, "warmup_epochs": 1, "warmup_lr": 0.02})

    def trained(seed: int, two_steps: bool = False) -> torch.Tensor:
        torch.manual_seed(0)
        model = models.create_model("digits-cnn", 10)
        seeded = spec.model_copy(update={"training": spec.training.model_copy(update={"seed": seed})})
        if two_steps:  # the warm-up by hand, then a MACER run without one
            gaussian.fit(model, train_set, macer.warmup_spec(seeded, macer.recipe_options(seeded)), torch.device("cpu"))
            seeded = tiny_spec(epochs=1, seed=seed, options={"k": 2})
        macer.fit(model, train_set, seeded, torch.device("cpu"))
        return torch.cat([p.flatten() for p in model.parameters()])

    first = trained(3)
    assert torch.equal(first, trained(3))
    assert torch.equal(first, trained(3, two_steps=True))
    assert not torch.equal(first, trained(4))


@pytest.mark.parametrize("name", [n for n in MACER_DEFENSES if "digits" in n])  # MNIST's: test_mnist_models
def test_shipped_macer_defenses_load_and_certify(name: str) -> None:
    spec = registry.get_defense(name)
    assert spec.kind == "smoothing" and spec.dataset.name == "digits"
    # the warm-up is the paired Gaussian entry's recipe, so the two differ by MACER alone
    warmup = macer.warmup_spec(spec, macer.recipe_options(spec)).training
    paired = registry.get_defense(name.replace("macer", "smoothing"))
    assert paired.sigma == spec.sigma
    assert warmup.model_dump(exclude={"options"}) == paired.training.model_dump(exclude={"options"})
    defense = load_defense(name)
    test_set = data.load_dataset("digits", "test")
    generator = torch.Generator().manual_seed(0)
    n, alpha = 1000, 0.001
    certificates = [defense.certify(test_set[i][0], n=n, alpha=alpha, generator=generator) for i in range(20)]
    correct = [c.prediction == int(test_set[i][1]) for i, c in enumerate(certificates)]
    # the model cards give 0.86-0.99 clean accuracy at n=100,000; a model with wrong weights gets about 0.1
    assert sum(correct) >= 15
    ceiling = spec.sigma * norm.ppf(alpha ** (1 / n))  # radius when every noisy copy votes for the class
    assert all(0 < c.radius <= ceiling + 1e-9 for c, ok in zip(certificates, correct) if ok)


def test_macer_defenses_are_shipped() -> None:
    assert {"macer-digits-0.25", "macer-digits-0.50"} <= set(MACER_DEFENSES)
