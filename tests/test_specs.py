"""Spec validation, table-driven: each broken field gives one line naming the file and the field."""

from pathlib import Path

import pytest
import yaml

from rsbench.errors import RsbenchError
from rsbench.registry import parse_spec
from rsbench.specs import AttackSpec, DefenseSpec

VALID_DEFENSE = {
    "name": "smoothing-toy-0.50",
    "kind": "smoothing",
    "dataset": {"name": "digits"},
    "architecture": "digits-cnn",
    "num_classes": 10,
    "sigma": 0.5,
    "weights": {"source": "package", "filename": "toy.pt", "sha256": "a" * 64},
}


def with_change(path: str, value: object) -> dict:
    """VALID_DEFENSE with one (dotted) field replaced, or removed when value is ...; a deep copy."""
    spec = yaml.safe_load(yaml.safe_dump(VALID_DEFENSE))
    *parents, leaf = path.split(".")
    node = spec
    for key in parents:
        node = node[key]
    if value is ...:
        del node[leaf]
    else:
        node[leaf] = value
    return spec


CASES = [
    ("unknown field", with_change("colour", "red"), "field 'colour'"),
    ("missing sigma", with_change("sigma", ...), "needs sigma"),
    ("negative sigma", with_change("sigma", -1.0), "field 'sigma'"),
    ("unknown kind", with_change("kind", "magic"), "field 'kind'"),
    ("short sha256", with_change("weights.sha256", "abc"), "field 'weights.sha256'"),
    ("hub without revision", with_change("weights", {"source": "hf", "repo_id": "o/r", "filename": "w.pt", "sha256": "a" * 64}), "revision"),
    ("hub with branch name", with_change("weights", {"source": "hf", "repo_id": "o/r", "filename": "w.pt", "sha256": "a" * 64, "revision": "main"}), "40-hex"),
    ("package without sha256", with_change("weights.sha256", ...), "needs sha256"),
    ("import without url", with_change("weights", {"source": "import", "filename": "w.pth"}), "needs the url"),
    ("member without url", with_change("weights.member", "models/w.pth"), "url is missing"),
    ("unknown dataset", with_change("dataset.name", "svhn"), "field 'dataset.name'"),
    ("alpha out of range", with_change("certify", {"alpha": 1.5}), "field 'certify.alpha'"),
    ("n0 zero", with_change("certify", {"n0": 0}), "field 'certify.n0'"),
    ("bad name", with_change("name", "Bad Name"), "field 'name'"),
    ("gloro without epsilon", with_change("kind", "gloro"), "needs epsilon"),
    ("one class", with_change("num_classes", 1), "field 'num_classes'"),
]


@pytest.mark.parametrize("case,data,message", CASES, ids=[c[0] for c in CASES])
def test_invalid_defense_specs_name_file_and_field(tmp_path: Path, case: str, data: dict, message: str) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(RsbenchError) as error:
        parse_spec(path, DefenseSpec)
    assert str(path) in str(error.value) and message in str(error.value)
    assert "\n" not in str(error.value)


def test_valid_defense_spec_parses_and_hashes_stably(tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text(yaml.safe_dump(VALID_DEFENSE))
    spec = parse_spec(path, DefenseSpec)
    assert spec.certify.n0 == 100 and spec.certify.n == 100_000 and spec.certify.alpha == 0.001
    assert spec.spec_hash() == DefenseSpec.model_validate(VALID_DEFENSE).spec_hash()
    assert spec.spec_hash() != DefenseSpec.model_validate(with_change("sigma", 0.25)).spec_hash()


@pytest.mark.parametrize("text,message", [("name: [unclosed", "malformed YAML at line"), ("- a list", "expected a mapping")])
def test_malformed_yaml_is_one_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(RsbenchError, match=message):
        parse_spec(path, DefenseSpec)


def test_yaml_cannot_execute_code(tmp_path: Path) -> None:
    path = tmp_path / "evil.yaml"
    path.write_text("name: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(RsbenchError, match="malformed YAML"):
        parse_spec(path, DefenseSpec)


def test_attack_spec_implementation_must_be_module_colon_class() -> None:
    with pytest.raises(Exception, match="implementation"):
        AttackSpec.model_validate({"name": "x", "implementation": "os.system", "goal": "evasion", "norm": "l2"})


def test_specs_are_frozen() -> None:
    spec = DefenseSpec.model_validate(VALID_DEFENSE)
    with pytest.raises(Exception):
        spec.sigma = 1.0  # type: ignore[misc]
