"""A run directory: fixed config, per-sample records appended as they finish, a summary.

Records are appended one JSON line at a time and flushed to disk, so an interrupted
run loses at most the sample in progress. Re-opening the directory with the same
config resumes: finished samples are skipped. A torn last line (a crash mid-write)
is dropped, never duplicated. A different config is refused, except for the number
of samples, which may grow to extend a run, the workers, and the attacks: a run may name
more attacks, in any order, and reuses the finished records of those whose spec did not
change (an attack whose spec hash changed is refused, its records being another attack's).
The default directory is named after everything else (`default_path`), so runs with
different settings never share one.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from rsbench.errors import RsbenchError
from rsbench.records import RunConfig

RecordT = TypeVar("RecordT", bound=BaseModel)
RESUMABLE_CHANGES = {"num_samples", "workers", "attacks", "attack_hashes"}
"""Config fields that may differ on resume: records are per (sample, attack) and do not depend on them."""


def run_key(config: RunConfig) -> str:
    """A short hash of every config field that fixes the records (all but RESUMABLE_CHANGES)."""
    fixed = config.model_dump(mode="json", exclude=RESUMABLE_CHANGES)
    return hashlib.sha256(json.dumps(fixed, sort_keys=True).encode()).hexdigest()[:10]


def default_path(config: RunConfig, root: Path = Path("runs")) -> Path:
    """`runs/<defense>/<command>[-<goal>]-seed<seed>-<run_key>`: one folder per set of record-fixing settings,
    shared by every run of them whatever its attacks or number of samples."""
    goal = f"-{config.goal}" if config.command == "evaluate" else ""
    return root / config.defense / f"{config.command}{goal}-seed{config.seed}-{run_key(config)}"


def write_json_atomic(path: Path, model: BaseModel) -> None:
    """Write a model as indented JSON via a temporary file, so readers never see half a file."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(model.model_dump_json(indent=2) + "\n")
    os.replace(temporary, path)


class RunDir:
    """The folder of one run, opened for appending."""

    def __init__(self, path: Path, config: RunConfig, records_name: str = "samples.jsonl") -> None:
        self.path = Path(path)
        self.records_path = self.path / records_name
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self._check_config(config)
            self.records_path.touch()
            if not os.access(self.records_path, os.W_OK):
                raise PermissionError(self.records_path)
        except OSError as error:
            raise RsbenchError(f"cannot write to run directory {self.path}: {error.strerror or error}") from None

    def _check_config(self, config: RunConfig) -> None:
        config_path = self.path / "config.json"
        if config_path.exists():
            try:
                previous = RunConfig.model_validate_json(config_path.read_text())
            except ValidationError:
                raise RsbenchError(f"{config_path} is not a valid run config; use another --out") from None
            changed = [
                field
                for field in RunConfig.model_fields
                if field not in RESUMABLE_CHANGES and getattr(previous, field) != getattr(config, field)
            ]
            if changed:
                raise RsbenchError(
                    f"{self.path} holds a run with a different config ({', '.join(changed)} changed); "
                    "use another --out or the original settings"
                )
            config = _with_earlier_attacks(previous, config, self.path)
        write_json_atomic(config_path, config)

    def records(self, record_type: type[RecordT]) -> list[RecordT]:
        """All complete records; a torn last line is cut off the file."""
        raw = self.records_path.read_bytes()
        complete, _, torn = raw.rpartition(b"\n")
        if torn:
            with self.records_path.open("r+b") as handle:
                handle.truncate(len(complete) + 1 if complete else 0)
        lines = complete.split(b"\n") if complete else []
        try:
            return [record_type.model_validate_json(line) for line in lines if line.strip()]
        except ValidationError as error:
            raise RsbenchError(f"{self.records_path}: a record is not valid ({error.errors()[0]['msg']})") from None

    def append(self, record: BaseModel) -> None:
        """Append one record and force it to disk."""
        with self.records_path.open("a") as handle:
            handle.write(json.dumps(record.model_dump(mode="json"), separators=(",", ":")) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def write_result(self, result: BaseModel, name: str = "result.json") -> Path:
        """Write the run's summary atomically; returns its path."""
        path = self.path / name
        write_json_atomic(path, result)
        return path


def _with_earlier_attacks(previous: RunConfig, config: RunConfig, path: Path) -> RunConfig:
    """`config` naming every attack the folder holds records of, earlier ones first; refuses an attack whose spec
    changed, whose records the folder could not tell apart from the old ones."""
    earlier = dict(zip(previous.attacks, previous.attack_hashes))
    now = dict(zip(config.attacks, config.attack_hashes))
    changed = [name for name, digest in now.items() if earlier.get(name, digest) != digest]
    if changed:
        raise RsbenchError(f"{path} holds records of another spec of attack {', '.join(changed)} (its spec hash "
                           "changed); use another --out")
    merged = {**earlier, **now}
    return config.model_copy(update={"attacks": list(merged), "attack_hashes": list(merged.values())})
