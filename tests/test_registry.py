"""The registry as shipped: every entry validates, resolves and loads; lookups help with typos."""

from pathlib import Path

import pytest
import torch
import yaml

from rsbench import registry
from rsbench.defenses import load_defense
from rsbench.errors import RsbenchError

DEFENSES = sorted(registry.all_specs("defenses"))
ATTACKS = sorted(registry.all_specs("attacks"))


def test_the_embedded_defaults_are_registered() -> None:
    assert {"smoothing-digits-0.25", "smoothing-digits-0.50", "smoothing-digits-1.00"} <= set(DEFENSES)
    assert registry.get_defense("smoothing-digits-0.5").name == "smoothing-digits-0.50"


# GloRo's MNIST nets take seconds each to bound (exact SVDs); test_mnist_models loads and attacks every one of them
@pytest.mark.parametrize("name", [n for n in DEFENSES if not n.startswith("gloro-mnist-")])
def test_every_defense_loads_with_verified_weights(name: str) -> None:
    spec = registry.get_defense(name)
    if spec.weights.source != "package":
        pytest.skip("weights outside the package are covered by their own tests")
    defense = load_defense(spec)
    x = {"digits": torch.zeros(1, 8, 8), "rgbdigits": torch.zeros(3, 8, 8)}.get(spec.dataset.name)
    if x is not None:
        prediction = defense.predict(x, generator=torch.Generator().manual_seed(0)) if spec.kind != "smoothing" else \
            defense.predict(x, n=100, generator=torch.Generator().manual_seed(0))
        assert prediction is None or 0 <= prediction < spec.num_classes


@pytest.mark.parametrize("name", ATTACKS)
def test_every_attack_resolves_and_its_params_validate(name: str) -> None:
    spec = registry.get_attack(name)
    assert registry.attack_params(spec) is not None


def test_unknown_name_suggests_close_matches() -> None:
    with pytest.raises(RsbenchError, match="did you mean smoothing-digits-0.50"):
        registry.get_defense("smoothing-digit-0.50")


@pytest.mark.parametrize(("change", "says"), [
    (lambda d: d.update(sigmaa=d.pop("sigma")), "field 'sigmaa': Extra inputs are not permitted; did you mean sigma?"),
    (lambda d: d["certify"].update(nn=3), "field 'certify.nn': Extra inputs are not permitted; did you mean n, n0?"),
    (lambda d: d["weights"].update(sha=1), "field 'weights.sha': Extra inputs are not permitted; did you mean sha256?"),
])
def test_an_unknown_spec_field_suggests_the_fields_it_may_mean(tmp_path: Path, change, says: str) -> None:  # noqa: ANN001
    data = {**registry.get_defense("smoothing-digits-0.50").model_dump(mode="json"), "name": "mine", "aliases": []}
    change(data)
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(RsbenchError) as error:
        registry.get_defense(str(tmp_path / "mine.yaml"))
    assert str(error.value) == f"{tmp_path / 'mine.yaml'}: {says}"


def test_an_unknown_attack_param_suggests_the_params_it_may_mean() -> None:
    spec = registry.get_attack("pgd")
    with pytest.raises(RsbenchError, match=r"params field 'iterationss': Extra inputs are not permitted; did you mean "
                                           r"iterations\?"):
        registry.attack_params(spec.model_copy(update={"params": {"iterationss": 3}}))


def test_unknown_attack_is_one_line() -> None:
    with pytest.raises(RsbenchError, match="unknown attack 'no-such-attack'"):
        registry.get_attack("no-such-attack")


def test_user_registry_overrides_and_file_name_must_match(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    builtin = registry.get_defense("smoothing-digits-0.25").model_dump(mode="json")
    (tmp_path / "defenses").mkdir()
    (tmp_path / "defenses" / "mine.yaml").write_text(yaml.safe_dump({**builtin, "name": "other"}))
    monkeypatch.setenv("RSBENCH_REGISTRY", str(tmp_path))
    assert "mine.yaml: field 'name' is 'other'" in registry.broken_specs("defenses")["mine"]
    with pytest.raises(RsbenchError, match="defense 'mine' is broken: .*mine.yaml: field 'name' is 'other'"):
        registry.get_defense("mine")
    (tmp_path / "defenses" / "mine.yaml").rename(tmp_path / "defenses" / "other.yaml")
    registry._load.cache_clear()  # a process reads its registry once; this one changed it on disk
    assert registry.get_defense("other").sigma == builtin["sigma"]


def test_checksum_mismatch_is_refused(tmp_path: Path) -> None:
    spec = registry.get_defense("smoothing-digits-0.25")
    broken = spec.model_copy(update={"weights": spec.weights.model_copy(update={"sha256": "0" * 64})})
    with pytest.raises(RsbenchError, match="checksum mismatch"):
        load_defense(broken)


def test_a_broken_user_spec_disables_only_its_own_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "defenses").mkdir()
    (tmp_path / "defenses" / "smoothing-digits-0.25.yaml").write_text("name: smoothing-digits-0.25\nkind: magic\n")
    (tmp_path / "defenses" / "typo.yaml").write_text("name: typo\n  bad: [indent\n")
    monkeypatch.setenv("RSBENCH_REGISTRY", str(tmp_path))
    assert set(registry.broken_specs("defenses")) == {"smoothing-digits-0.25", "typo"}
    assert registry.get_defense("smoothing-digits-0.50").sigma == 0.5
    # a broken override is reported, never silently replaced by the built-in spec it was meant to override
    with pytest.raises(RsbenchError, match="is broken: .*field 'kind'"):
        registry.get_defense("smoothing-digits-0.25")
    with pytest.raises(RsbenchError, match="malformed YAML"):
        registry.find("typo")
