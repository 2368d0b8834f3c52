"""Cohen et al.'s released models by name: import and pin a checkpoint, refuse wrong files, evaluate end to end.

Nothing is downloaded: checkpoints are written in the authors' exact format with random
weights, and CIFAR-10 in torchvision's on-disk format with images made here.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets.cifar
import yaml
from click.testing import CliRunner

from rsbench import hub, registry
from rsbench.cli import cli
from rsbench.defenses import load_defense
from rsbench.errors import RsbenchError
from rsbench.models import CifarResNet

TINY_CAA = {"name": "caa-tiny", "implementation": "rsbench.attacks.caa:CAA", "goal": "evasion", "norm": "l2",
            "params": {"num_noise": 8, "iterations": 2, "alpha": 0.05}}


@pytest.fixture
def machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty weights cache and data folder, and a user registry holding a tiny CAA."""
    (tmp_path / "registry" / "attacks").mkdir(parents=True)
    (tmp_path / "registry" / "attacks" / "caa-tiny.yaml").write_text(yaml.safe_dump(TINY_CAA))
    monkeypatch.setenv("RSBENCH_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.setenv("RSBENCH_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("RSBENCH_REGISTRY", str(tmp_path / "registry"))
    return tmp_path


def invoke(*args: str) -> object:
    return CliRunner().invoke(cli, list(args))


def authors_checkpoint(path: Path, depth: int = 110, seed: int = 0) -> Path:
    """A checkpoint as the authors' training script saves it: `Sequential(NormalizeLayer, DataParallel(net))`,
    whose normalize layer has no state, so every key reads `1.module.…`, next to the epoch and optimizer state."""
    torch.manual_seed(seed)
    net = CifarResNet(depth, 10)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    state = {f"1.module.{key}": value for key, value in net.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": 90, "arch": f"cifar_resnet{depth}", "state_dict": state,
                "optimizer": optimizer.state_dict()}, path)
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def one_line_error(result: object, message: str) -> None:
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output


def test_an_html_page_saved_as_a_checkpoint_is_refused(machine: Path) -> None:
    page = machine / "checkpoint.pth.tar"
    page.write_text("\n<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head></html>")
    one_line_error(invoke("models", "import", "smoothing-cifar-0.5", str(page)), "is an HTML page, not a checkpoint")
    assert not (machine / "weights" / "smoothing-cifar-0.50.pth.tar").exists()


def test_a_checkpoint_of_another_architecture_or_no_checkpoint_is_refused(machine: Path) -> None:
    shallow = authors_checkpoint(machine / "resnet20.pth.tar", depth=20)
    one_line_error(invoke("models", "import", "smoothing-cifar-0.5", str(shallow)), "it says arch 'cifar_resnet20'")
    noise = machine / "noise.pth.tar"
    noise.write_bytes(bytes(range(256)) * 8)
    one_line_error(invoke("models", "import", "smoothing-cifar-0.5", str(noise)), "is not a torch checkpoint")
    assert hub.read_pins() == {} and not any((machine / "weights").glob("*.pth.tar"))


def test_the_entry_s_member_is_picked_from_the_release_archive_and_pinned(machine: Path) -> None:
    release = machine / "release"
    wanted = authors_checkpoint(release / "models/cifar10/resnet110/noise_0.25/checkpoint.pth.tar", seed=1)
    authors_checkpoint(release / "models/cifar10/resnet110/noise_0.50/checkpoint.pth.tar", seed=2)
    archive = machine / "models.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(release / "models", arcname="models")
    listed = json.loads(invoke("registry", "list", "--kind", "defenses", "--json").output)["defenses"]
    before = next(d for d in listed if d["name"] == "smoothing-cifar-0.25")
    assert (before["weights_present"], before["data_present"]) == (False, False)

    result = invoke("models", "import", "smoothing-cifar-0.25", str(archive))
    assert result.exit_code == 0, result.output
    stored = machine / "weights" / "smoothing-cifar-0.25.pth.tar"
    assert sha256(stored) == sha256(wanted) and sha256(wanted) in result.output
    assert hub.read_pins()["smoothing-cifar-0.25.pth.tar"]["sha256"] == sha256(wanted)
    listed = json.loads(invoke("registry", "list", "--kind", "defenses", "--json").output)["defenses"]
    after = {d["name"]: d for d in listed}
    assert after["smoothing-cifar-0.25"]["weights_present"] and not after["smoothing-cifar-0.50"]["weights_present"]
    assert after["smoothing-cifar-0.25"]["goals"] == ["evasion", "degradation", "spoofing"]
    # the extracted folder works as well, and gives the same file
    result = invoke("models", "import", "smoothing-cifar-0.25", str(release))
    assert result.exit_code == 0 and sha256(stored) == sha256(wanted)


def test_a_pinned_file_changed_afterwards_is_refused(machine: Path) -> None:
    first = authors_checkpoint(machine / "first.pth.tar", seed=1)
    assert invoke("models", "import", "smoothing-cifar-1.00", str(first)).exit_code == 0
    spec = registry.get_defense("smoothing-cifar-1.00")
    load_defense(spec)  # verified against the pin
    stored = machine / "weights" / "smoothing-cifar-1.00.pth.tar"
    data = bytearray(stored.read_bytes())
    data[-100] ^= 0xFF
    stored.write_bytes(bytes(data))
    with pytest.raises(RsbenchError, match="checksum mismatch"):
        load_defense(spec)
    other = authors_checkpoint(machine / "other.pth.tar", seed=2)
    one_line_error(invoke("models", "import", "smoothing-cifar-1.00", str(other)), "pass --replace")
    assert invoke("models", "import", "smoothing-cifar-1.00", str(other), "--replace").exit_code == 0
    assert hub.read_pins()["smoothing-cifar-1.00.pth.tar"]["sha256"] == sha256(other)


def test_missing_data_and_weights_are_named_in_one_line(machine: Path) -> None:
    result = invoke("evaluate", "--defense", "smoothing-cifar-0.5", "--attack", "caa", "--out", str(machine / "run"))
    one_line_error(result, "smoothing-cifar-0.50 needs files this machine lacks")
    assert "rsbench data pull cifar10" in result.output and "rsbench models pull smoothing-cifar-0.50" in result.output
    assert "rsbench models import smoothing-cifar-0.50 FILE" in result.output
    result = invoke("certify", "--defense", "smoothing-imagenet-0.5", "--out", str(machine / "run"))
    one_line_error(result, str(machine / "data" / "imagenet" / "val"))
    assert not (machine / "run").exists()


def test_pull_without_the_download_extra_says_how_to_import(machine: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(__import__("sys").modules, "gdown", None)  # as when rsbench[download] is not installed
    result = invoke("models", "pull", "smoothing-cifar-0.5")
    one_line_error(result, "pip install 'rsbench[download]'")
    assert "rsbench models import smoothing-cifar-0.50 FILE" in result.output


def write_cifar10_test(root: Path, images: np.ndarray, labels: list[int]) -> None:
    """CIFAR-10's python format: pickled dicts of uint8 rows (R, G, B planes of 32x32) and labels."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    with (folder / "test_batch").open("wb") as handle:
        pickle.dump({"data": images.reshape(len(labels), -1), "labels": labels}, handle)
    with (folder / "batches.meta").open("wb") as handle:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, handle)


def test_evaluate_cifar_with_an_imported_checkpoint_end_to_end(machine: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    checkpoint = authors_checkpoint(machine / "download" / "checkpoint.pth.tar")
    assert invoke("models", "import", "smoothing-cifar-0.5", str(checkpoint)).exit_code == 0
    images = np.random.default_rng(0).integers(0, 256, size=(2, 3, 32, 32), dtype=np.uint8)
    x = torch.from_numpy(images).float() / 255
    with torch.no_grad():  # label each image as the random network does, so that both are attacked
        labels = load_defense("smoothing-cifar-0.50").base_classifier(x).argmax(1).tolist()
    write_cifar10_test(machine / "data" / "cifar10", images, labels)
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *args: True)  # md5s of the real files

    out = machine / "run"
    result = invoke("evaluate", "--defense", "smoothing-cifar-0.5", "--attack", "caa-tiny", "--num-samples", "2",
                    "--n0", "8", "--n", "24", "--alpha", "0.1", "--batch-size", "24", "--device", "cpu",
                    "--workers", "1", "--out", str(out))  # one process: the monkeypatches above hold in it
    assert result.exit_code == 0, result.output
    assert "caa-tiny" in result.output and "%-Cohen" in result.output
    summary = json.loads((out / "result.json").read_text())
    assert summary["weights_sha256"] == sha256(checkpoint)
    assert summary["defense"]["name"] == "smoothing-cifar-0.50" and summary["defense"]["sigma"] == 0.5
    clean = [json.loads(line) for line in (out / "clean.jsonl").read_text().splitlines()]
    assert [c["label"] for c in clean] == labels
    records = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert all(c["correct"] for c in clean) and sorted(r["index"] for r in records) == [0, 1]
    assert all(r["attack"] == "caa-tiny" and r["iterations"] >= 1 for r in records)
