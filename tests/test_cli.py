"""The command line through click's test runner: output, files and one-line errors."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from rsbench.cli import cli


def invoke(*args: str) -> object:
    return CliRunner().invoke(cli, list(args))


def test_registry_list_and_json() -> None:
    listed = invoke("registry", "list", "--kind", "defenses")
    assert listed.exit_code == 0 and "smoothing-digits-0.50" in listed.output
    as_json = json.loads(invoke("registry", "list", "--json").output)
    assert {"defenses", "attacks"} == set(as_json)
    assert any(spec["name"] == "smoothing-digits-1.00" for spec in as_json["defenses"])


def test_registry_list_json_shows_goals_and_presence() -> None:
    defenses = {d["name"]: d for d in json.loads(invoke("registry", "list", "--json").output)["defenses"]}
    digits = defenses["smoothing-digits-0.50"]
    assert digits["goals"] == ["evasion", "degradation", "spoofing"] == defenses["kw-digits-0.05"]["goals"]
    assert digits["data_present"] and digits["weights_present"]  # shipped inside the package
    assert {"smoothing-cifar-0.12", "smoothing-cifar-1.00", "smoothing-imagenet-0.25"} <= set(defenses)
    cifar = defenses["smoothing-cifar-0.50"]
    assert cifar["weights"]["sha256"] is None and cifar["weights"]["member"].endswith("noise_0.50/checkpoint.pth.tar")


def test_broken_user_specs_are_listed_and_leave_other_commands_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "attacks").mkdir()
    bad_params = {"name": "caa-bad", "implementation": "rsbench.attacks.caa:CAA", "goal": "evasion", "norm": "l2",
                  "params": {"iterations": 0}}
    (tmp_path / "attacks" / "caa-bad.yaml").write_text(json.dumps(bad_params))
    (tmp_path / "attacks" / "oops.yaml").write_text("name: oops\ngoal: evasion\n")
    monkeypatch.setenv("RSBENCH_REGISTRY", str(tmp_path))
    listed = invoke("registry", "list", "--kind", "attacks")
    assert listed.exit_code == 0 and "caa " in listed.output
    assert "oops" in listed.output and "BROKEN" in listed.output and "field 'implementation'" in listed.output
    broken = json.loads(invoke("registry", "list", "--json").output)["attacks"]
    assert {"name": "oops"} .items() <= next(a for a in broken if a["name"] == "oops").items()
    shown = invoke("registry", "show", "caa-bad")
    assert shown.exit_code == 2 and "attack 'caa-bad': params field 'iterations'" in shown.output
    assert invoke("registry", "show", "caa").exit_code == 0


def test_registry_show_includes_the_hash() -> None:
    shown = json.loads(invoke("registry", "show", "smoothing-digits-0.5").output)
    assert shown["sigma"] == 0.5 and len(shown["spec_hash"]) == 64


def test_registry_schema_is_json_schema() -> None:
    schema = json.loads(invoke("registry", "schema", "DefenseSpec").output)
    assert schema["additionalProperties"] is False
    assert "Gaussian noise level" in schema["properties"]["sigma"]["description"]


def test_certify_prints_the_table_and_writes_the_run(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = invoke("certify", "--defense", "smoothing-digits-0.5", "--num-samples", "3", "--n0", "10",
                    "--n", "200", "--alpha", "0.01", "--device", "cpu", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "certified acc" in result.output and "95% interval" in result.output
    assert {"config.json", "samples.jsonl", "result.json", "certified_accuracy.png"} <= {p.name for p in out.iterdir()}


@pytest.mark.parametrize(
    "args,message",
    [
        (["certify", "--defense", "smoothing-digit-0.5"], "did you mean"),
        (["certify", "--defense", "smoothing-digits-0.5", "--alpha", "2"], "alpha must lie strictly between 0 and 1"),
        (["certify", "--defense", "smoothing-digits-0.5", "--n0", "0"], "--n0 must be a positive integer"),
        (["registry", "show", "nothing-like-it"], "unknown defense or attack"),
        (["models", "pull", "no-such-defense"], "unknown defense"),
    ],
)
def test_bad_input_is_one_line_and_non_zero(args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_models_pull_verifies_packaged_weights() -> None:
    result = invoke("models", "pull", "smoothing-digits-0.25")
    assert result.exit_code == 0 and "sha256 verified" in result.output


@pytest.mark.parametrize("command", ["certify", "evaluate", "degradation-curve"])
def test_defense_help_names_every_form_it_takes(command: str) -> None:
    done = CliRunner().invoke(cli, [command, "--help"])
    text = " ".join(done.output.split())
    assert done.exit_code == 0 and "a registry name or alias" in text
    assert "the path of a defense spec's YAML file" in text and "a defense submission's folder" in text
