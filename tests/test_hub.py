"""Weights from a pre-populated Hugging Face cache (never the network), checksums first."""

import os
import subprocess
import sys
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
import yaml

from rsbench import hub, registry
from rsbench.errors import RsbenchError
from rsbench.specs import WeightsRef

REVISION = "0123456789abcdef0123456789abcdef01234567"


def populate_cache(cache: Path, payload: bytes, repo: str = "rsbench/toy", filename: str = "model.pt") -> Path:
    """Lay a file out as the Hub client stores it: models--owner--name/snapshots/<commit>/<file>."""
    snapshot = cache / f"models--{repo.replace('/', '--')}" / "snapshots" / REVISION
    snapshot.mkdir(parents=True)
    (snapshot / filename).write_bytes(payload)
    return snapshot / filename


@pytest.fixture
def offline_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return tmp_path


def hub_ref(sha256: str, filename: str = "model.pt") -> WeightsRef:
    return WeightsRef(source="hf", repo_id="rsbench/toy", filename=filename, revision=REVISION, sha256=sha256)


def saved_state(tmp_path: Path) -> bytes:
    path = tmp_path / "state.pt"
    torch.save({"weight": torch.arange(6.0).view(2, 3)}, path)
    return path.read_bytes()


def test_served_from_the_cache_when_offline(offline_cache: Path, tmp_path: Path) -> None:
    payload = saved_state(tmp_path)
    cached = populate_cache(offline_cache, payload)
    ref = hub_ref(hub.sha256_of(cached))
    assert hub.resolve_weights(ref) == cached
    assert torch.equal(hub.load_checkpoint(ref)["weight"], torch.arange(6.0).view(2, 3))


def test_checksum_mismatch_in_the_cache_is_refused(offline_cache: Path, tmp_path: Path) -> None:
    populate_cache(offline_cache, saved_state(tmp_path))
    with pytest.raises(RsbenchError, match="checksum mismatch"):
        hub.load_checkpoint(hub_ref("f" * 64))


def test_missing_offline_says_what_to_do(offline_cache: Path) -> None:
    with pytest.raises(RsbenchError, match="not in the Hugging Face cache"):
        hub.resolve_weights(hub_ref("f" * 64, filename="absent.pt"))


def test_pickled_code_is_never_executed(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"callable": os.system}, path)  # a pickle that references a function
    ref = WeightsRef(source="file", filename=str(path), sha256=hub.sha256_of(path))
    with pytest.raises(RsbenchError, match="cannot read weights"):
        hub.load_checkpoint(ref)


def test_models_pull_from_a_cache_through_the_environment(tmp_path: Path) -> None:
    """End to end, as a user would: HF_HUB_OFFLINE=1 and a registry entry with Hub weights."""
    cache, user_registry = tmp_path / "cache", tmp_path / "registry"
    cached = populate_cache(cache, saved_state(tmp_path))
    spec = registry.get_defense("smoothing-digits-0.25").model_dump(mode="json")
    spec.update(name="hub-toy", aliases=[], weights=hub_ref(hub.sha256_of(cached)).model_dump(mode="json"))
    (user_registry / "defenses").mkdir(parents=True)
    (user_registry / "defenses" / "hub-toy.yaml").write_text(yaml.safe_dump(spec))
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "RSBENCH_REGISTRY": str(user_registry)}
    command = [sys.executable, "-m", "rsbench", "models", "pull", "hub-toy"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert str(cached) in done.stdout and "sha256 verified" in done.stdout
    cached.write_bytes(b"tampered")
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "checksum mismatch" in done.stderr and "Traceback" not in done.stderr
