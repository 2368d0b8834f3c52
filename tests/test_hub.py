"""Weights from the Hugging Face Hub: a pre-populated cache, and the real download path against a local endpoint."""

import base64
import hashlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

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
    cached = populate_cache(offline_cache, saved_state(tmp_path))
    with pytest.raises(RsbenchError, match="checksum mismatch") as error:
        hub.load_checkpoint(hub_ref("f" * 64))
    assert str(error.value).endswith(f"expected sha256 {'f' * 64}, got {hub.sha256_of(cached)}")  # both in full


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


class HubHandler(BaseHTTPRequestHandler):
    """The part of the Hub API `hf_hub_download` uses: HEAD and GET of /<repo>/resolve/<revision>/<file>, answered
    with the headers the client needs (X-Repo-Commit, ETag, Content-Length) or its error codes; and for
    `rsbench models push`, creating a repository and committing files."""

    files: dict[tuple[str, str, str], bytes] = {}
    refs: dict[str, str] = {}
    """Branch or tag name -> the commit it points to now."""
    requests: list[str] = []

    def do_HEAD(self) -> None:  # noqa: N802 - the http.server API
        self.answer(body=False)

    def do_GET(self) -> None:  # noqa: N802
        self.answer(body=True)

    def answer(self, body: bool) -> None:
        self.requests.append(f"{self.command} {self.path}")
        owner, name, verb, revision, filename = unquote(self.path).lstrip("/").split("/", 4)
        commit = self.refs.get(revision, revision)
        if verb != "resolve" or not any(key[1] == commit for key in self.files):
            return self.error(404, "RevisionNotFound", {})
        payload = self.files.get((f"{owner}/{name}", commit, filename))
        if payload is None:
            return self.error(404, "EntryNotFound", {"X-Repo-Commit": commit})
        self.send_response(200)
        for key, value in {"X-Repo-Commit": commit, "ETag": f'"{hashlib.sha256(payload).hexdigest()}"',
                           "Content-Length": str(len(payload)), "Content-Type": "application/octet-stream"}.items():
            self.send_header(key, value)
        self.end_headers()
        if body:
            self.wfile.write(payload)

    def do_POST(self) -> None:  # noqa: N802
        """The part of the API `HfApi.create_repo` and `create_commit` use: every file is uploaded as a regular blob
        (base64 in the commit's NDJSON), and a commit's id is the sha1 of its body."""
        self.requests.append(f"POST {self.path}")
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        parts = unquote(self.path).lstrip("/").split("/")
        if parts[:2] == ["api", "repos"]:
            return self.json({"url": f"http://{self.headers['Host']}/{json.loads(body)['organization']}/"
                                     f"{json.loads(body)['name']}"})
        if parts[:2] == ["api", "validate-yaml"]:
            return self.json({"errors": [], "warnings": []})
        repo, verb = "/".join(parts[2:4]), parts[4]
        if verb == "preupload":
            return self.json({"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                        for f in json.loads(body)["files"]]})
        commit = hashlib.sha1(body).hexdigest()
        for line in body.decode().splitlines():
            item = json.loads(line)
            if item["key"] == "file":
                self.files[(repo, commit, item["value"]["path"])] = base64.b64decode(item["value"]["content"])
        self.json({"commitUrl": f"http://{self.headers['Host']}/{repo}/commit/{commit}", "commitOid": commit,
                   "pullRequestUrl": None})

    def json(self, value: object) -> None:
        payload = json.dumps(value).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def error(self, status: int, code: str, headers: dict[str, str]) -> None:
        self.send_response(status)
        for key, value in {"X-Error-Code": code, "Content-Length": "0", **headers}.items():
            self.send_header(key, value)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def hub_server(tmp_path: Path) -> Iterator[str]:
    """A local Hub on 127.0.0.1 serving rsbench/toy's model.pt at REVISION; `MOVING` is a branch named like a commit."""
    HubHandler.files = {("rsbench/toy", REVISION, "model.pt"): saved_state(tmp_path)}
    HubHandler.refs = {MOVING: REVISION}
    HubHandler.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), HubHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


MOVING = "f" * 40


def hub_registry(folder: Path, entries: dict[str, dict]) -> Path:
    """A user registry of Hub-weighted copies of smoothing-digits-0.25, one per entry of weights overrides."""
    spec = registry.get_defense("smoothing-digits-0.25").model_dump(mode="json")
    (folder / "defenses").mkdir(parents=True)
    for name, overrides in entries.items():
        weights = {"source": "hf", "repo_id": "rsbench/toy", "filename": "model.pt", "revision": REVISION, **overrides}
        (folder / "defenses" / f"{name}.yaml").write_text(yaml.safe_dump({**spec, "name": name, "aliases": [],
                                                                          "weights": weights}))
    return folder


def pull(names: list[str], env: dict[str, str]) -> list[tuple[int, str]]:
    """`rsbench models pull NAME` for each name, in one fresh process (so the Hub client reads env as a user's would)."""
    script = ("import sys; from click.testing import CliRunner; from rsbench.cli import cli\n"
              "for name in sys.argv[1:]:\n"
              "    done = CliRunner().invoke(cli, ['models', 'pull', name])\n"
              "    print(done.exit_code, done.output.strip().replace('\\n', ' | '))\n")
    done = subprocess.run([sys.executable, "-c", script, *names], env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    return [(int(line.split(" ", 1)[0]), line.split(" ", 1)[1]) for line in done.stdout.splitlines()]


def test_weights_come_from_the_hub_endpoint_pinned_and_then_from_the_cache_offline(hub_server: str,
                                                                                   tmp_path: Path) -> None:
    payload = HubHandler.files[("rsbench/toy", REVISION, "model.pt")]
    sha = hashlib.sha256(payload).hexdigest()
    user_registry = hub_registry(tmp_path / "registry", {
        "hub-ok": {"sha256": sha}, "hub-tampered": {"sha256": "0" * 64, "filename": "model.pt"},
        "hub-moving": {"sha256": sha, "revision": MOVING}, "hub-missing": {"sha256": sha, "filename": "absent.pt"},
        "hub-branch": {"sha256": sha, "revision": "main"},
    })
    env = {**os.environ, "HF_ENDPOINT": hub_server, "HF_HUB_CACHE": str(tmp_path / "cache"),
           "RSBENCH_REGISTRY": str(user_registry), "HF_HUB_DISABLE_TELEMETRY": "1"}
    env.pop("HF_HUB_OFFLINE", None)
    ok, tampered, moving, missing, branch = pull(["hub-ok", "hub-tampered", "hub-moving", "hub-missing", "hub-branch"],
                                                 env)
    assert ok[0] == 0 and "sha256 verified" in ok[1] and f"snapshots/{REVISION}/model.pt" in ok[1]
    assert any(r.startswith("GET /rsbench/toy/resolve/") for r in HubHandler.requests)
    assert tampered[0] == 2 and "checksum mismatch" in tampered[1]
    assert moving[0] == 2 and "a revision must be a commit, not a branch or tag" in moving[1]
    assert missing[0] == 2 and "the Hub has no file absent.pt in rsbench/toy" in missing[1]
    assert branch[0] == 2 and "revision pinned to a 40-hex commit hash, got 'main'" in branch[1]
    assert all(" | " not in output for _, output in (tampered, moving, missing, branch))  # one line each
    served = len(HubHandler.requests)
    offline = pull(["hub-ok", "hub-missing"], {**env, "HF_HUB_OFFLINE": "1"})
    assert offline[0][0] == 0 and "sha256 verified" in offline[0][1]
    assert offline[1][0] == 2 and "not in the Hugging Face cache" in offline[1][1]
    assert len(HubHandler.requests) == served  # offline means no request at all


def test_models_push_publishes_weights_and_card_in_one_commit_that_pulls_back_pinned(hub_server: str,
                                                                                   tmp_path: Path) -> None:
    card = tmp_path / "card.md"
    card.write_text("---\nlicense: mit\n---\n# smoothing-digits-0.25\n")
    env = {**os.environ, "HF_ENDPOINT": hub_server, "HF_HUB_CACHE": str(tmp_path / "cache"), "HF_TOKEN": "hf_local",
           "HF_HUB_DISABLE_TELEMETRY": "1"}
    env.pop("HF_HUB_OFFLINE", None)
    script = ("import sys; from click.testing import CliRunner; from rsbench.cli import cli\n"
              "done = CliRunner().invoke(cli, sys.argv[1:])\nprint(done.exit_code); print(done.output)\n")
    command = [sys.executable, "-c", script, "models", "push", "smoothing-digits-0.25", "--repo", "someone/digits",
               "--card", str(card)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    code, output = done.stdout.split("\n", 1)
    assert code == "0", done.stdout + done.stderr
    weights = yaml.safe_load(output.split("in its spec:\n", 1)[1])["weights"]
    shipped = hub.local_path(registry.get_defense("smoothing-digits-0.25").weights)
    assert weights == {"source": "hf", "filename": "smoothing-digits-0.25.pt", "sha256": hub.sha256_of(shipped),
                       "repo_id": "someone/digits", "revision": weights["revision"]}
    assert HubHandler.files[("someone/digits", weights["revision"], "smoothing-digits-0.25.pt")] == shipped.read_bytes()
    assert HubHandler.files[("someone/digits", weights["revision"], "README.md")] == card.read_bytes()
    # the printed lines, pasted into a spec, pull the very file back pinned to that commit
    spec = registry.get_defense("smoothing-digits-0.25").model_dump(mode="json")
    (tmp_path / "registry" / "defenses").mkdir(parents=True)
    (tmp_path / "registry" / "defenses" / "pushed.yaml").write_text(
        yaml.safe_dump({**spec, "name": "pushed", "aliases": [], "weights": weights}))
    (pulled,) = pull(["pushed"], {**env, "RSBENCH_REGISTRY": str(tmp_path / "registry")})
    assert pulled[0] == 0 and f"snapshots/{weights['revision']}/smoothing-digits-0.25.pt" in pulled[1]
    assert f"sha256 verified: {weights['sha256']}" in pulled[1]


def test_models_push_without_a_card_says_how_to_write_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from rsbench.cli import cli

    monkeypatch.chdir(tmp_path)
    done = CliRunner().invoke(cli, ["models", "push", "smoothing-digits-0.25", "--repo", "someone/digits"])
    assert done.exit_code == 2 and done.output.count("\n") == 1
    assert "no model card at model-cards/smoothing-digits-0.25/README.md: write one with `rsbench models card`" \
        in done.output


def test_a_graph_defense_is_pushed_with_its_card_and_a_submission_naming_it_on_the_hub_loads(hub_server: str,
                                                                                              tmp_path: Path) -> None:
    """`models push` of a defense submission's folder publishes its ONNX graph; the folder, its graph removed and its
    weights the printed Hub reference, is a submission that loads: the graph comes back pinned and checked."""
    import shutil

    example = Path(__file__).resolve().parents[1] / "submissions" / "defenses" / "aol-digits-graph"
    card = tmp_path / "card.md"
    card.write_text("---\nlicense: mit\nlibrary_name: onnx\n---\n# aol-digits-graph\n")
    env = {**os.environ, "HF_ENDPOINT": hub_server, "HF_HUB_CACHE": str(tmp_path / "cache"), "HF_TOKEN": "hf_local",
           "HF_HUB_DISABLE_TELEMETRY": "1"}
    env.pop("HF_HUB_OFFLINE", None)
    script = ("import sys; from click.testing import CliRunner; from rsbench.cli import cli\n"
              "done = CliRunner().invoke(cli, sys.argv[1:])\nprint(done.exit_code); print(done.output)\n")
    command = [sys.executable, "-c", script, "models", "push", str(example), "--repo", "someone/aol", "--card", str(card)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    code, output = done.stdout.split("\n", 1)
    assert code == "0", done.stdout + done.stderr
    weights = yaml.safe_load(output.split("in its spec:\n", 1)[1])["weights"]
    graph = (example / "model.onnx").read_bytes()
    assert weights == {"source": "hf", "filename": "model.onnx", "sha256": hashlib.sha256(graph).hexdigest(),
                       "repo_id": "someone/aol", "revision": weights["revision"]}
    assert HubHandler.files[("someone/aol", weights["revision"], "model.onnx")] == graph
    assert HubHandler.files[("someone/aol", weights["revision"], "README.md")] == card.read_bytes()
    folder = tmp_path / "aol-digits-graph"
    shutil.copytree(example, folder)
    (folder / "model.onnx").unlink()  # the submission names the Hub's copy instead of carrying the file
    data = yaml.safe_load((folder / "submission.yaml").read_text())
    (folder / "submission.yaml").write_text(yaml.safe_dump({**data, "defense": {**data["defense"], "weights": weights}}))
    check = ("import sys; from pathlib import Path; from rsbench import hub\n"
             "from rsbench.submissions import defense_submissions\n"
             "spec = defense_submissions.load(Path(sys.argv[1])).defense\n"
             "print(hub.resolve_weights(spec.weights, Path(sys.argv[1])))\n")
    loaded = subprocess.run([sys.executable, "-c", check, str(folder)], env=env, capture_output=True, text=True,
                            timeout=180)
    assert loaded.returncode == 0, loaded.stderr
    assert Path(loaded.stdout.strip()).read_bytes() == graph and f"snapshots/{weights['revision']}/" in loaded.stdout
