"""Running code nobody vouches for: a bubblewrap sandbox, and fingerprints of what it must leave alone.

Inside the sandbox a process runs as `nobody` in a user namespace of its own, with no capabilities, and
sees the system's libraries and this Python installation (read-only), the folders its caller mounts (a
read-only copy of the harness, the submission, the data and weights caches) and one writable scratch
folder; a private /tmp, a minimal /dev and its own /proc; a handful of environment variables; a network
namespace of its own with nothing but loopback; a PID namespace (it cannot see or signal other
processes, and all its processes die with it); a new session (no terminal); no user namespaces of its own
and a seccomp filter that denies the system calls a submission never needs (`syscalls`: namespaces, ptrace,
mounts, key rings, BPF, kernel modules, io_uring).
It does not see any checkout (no `leaderboards/`, no `.git`), home folders or the caller's environment.

What it does not isolate: CPU, memory and disk use (only the caller's wall-clock limit bounds them),
the kernel itself (a kernel exploit escapes any namespace sandbox), and timing. Where bubblewrap is
missing or cannot create namespaces (Ubuntu 24.04 restricts them to programs AppArmor allows), runs are
refused with the fix in one line, unless the caller opts out for a local trial of its own code; CI never
may. Either way the caller fingerprints the trees that must not change (`digest`) before and after.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import site
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import IO

import rsbench
from rsbench.errors import RsbenchError
from rsbench.submissions import syscalls

SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc/ld.so.cache", "/etc/ld.so.conf",
          "/etc/ld.so.conf.d", "/etc/alternatives", "/etc/localtime", "/etc/fonts")
"""System paths mounted read-only where they exist: programs, libraries and the dynamic loader's files."""
ECHO_CHARS = 200
"""The most characters of a sandboxed process's error text that rsbench repeats."""
TICK_S = 0.5
"""Seconds between two looks at a running command's progress."""
NO_SANDBOX = ("bubblewrap (bwrap) {why}: submission code runs only inside its sandbox. Install it "
              "(apt-get install bubblewrap; on Ubuntu 24.04 also let AppArmor give it user namespaces, see "
              "CONTRIBUTING.md), or pass --unsandboxed to try your own code on this machine (never in CI)")


def in_ci() -> bool:
    """Whether this is a CI job (CI or GITHUB_ACTIONS set), where nothing runs unsandboxed."""
    return bool(os.environ.get("CI") or os.environ.get("GITHUB_ACTIONS"))


@lru_cache(maxsize=1)
def unavailable() -> str | None:
    """Why bubblewrap cannot sandbox on this machine (missing, older than 0.8, which has no --disable-userns, not
    allowed to create namespaces, or without the system-call filter); None if it can."""
    binary = shutil.which("bwrap")
    if binary is None:
        return NO_SANDBOX.format(why="is not installed")
    try:
        filter_fd = syscalls.descriptor()
    except RsbenchError as error:
        return str(error)
    probe = [binary, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--unshare-all", "--unshare-user",
             "--disable-userns", "--seccomp", str(filter_fd), "--die-with-parent", "true"]
    try:
        done = subprocess.run(probe, capture_output=True, text=True, timeout=30, pass_fds=(filter_fd,))
    except (OSError, subprocess.TimeoutExpired) as error:
        return NO_SANDBOX.format(why=f"cannot start ({error})")
    finally:
        os.close(filter_fd)
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        return NO_SANDBOX.format(why=f"cannot create namespaces here, or is older than 0.8 ({reason})")
    return None


def require(isolated: bool) -> None:
    """Refuse, in one line, a sandbox bubblewrap cannot provide here, or a run without one on CI."""
    if isolated:
        reason = unavailable()
        if reason:
            raise RsbenchError(reason)
    elif in_ci():
        raise RsbenchError("--unsandboxed is refused on CI: submission code runs there only inside its sandbox")


def python_paths() -> list[str]:
    """Folders this Python installation runs from: prefixes, the interpreter's and the site-packages folders."""
    executable = Path(sys.executable).resolve()
    paths = {sys.prefix, sys.base_prefix, str(executable.parent.parent), *site.getsitepackages()}
    return sorted(p for p in paths if Path(p).exists())


def harness_copy(dest: Path) -> Path:
    """A copy of the rsbench package the caller runs (and of the registry, when it lies beside the package), in
    `dest`, without compiled files; the folder to put on the sandbox's PYTHONPATH."""
    package = Path(rsbench.__file__).resolve().parent
    shutil.copytree(package, dest / "rsbench", symlinks=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    registry = package.parent / "registry"
    if not (package / "_registry").is_dir() and registry.is_dir():
        shutil.copytree(registry, dest / "registry", symlinks=True)
    return dest


def echoed(text: str) -> str:
    """What of a sandboxed process's error text reaches rsbench's output: its last non-blank line, printable
    characters only, at most ECHO_CHARS of them (the child cannot pour a file it read into the parent's output)."""
    lines = [line for line in text.splitlines() if line.strip()]
    last = "".join(c if c.isprintable() else "?" for c in (lines[-1] if lines else "")).strip()
    return last if len(last) <= ECHO_CHARS else last[:ECHO_CHARS - 3] + "..."


def digest(*roots: Path) -> str:
    """sha256 over every file, folder and link under `roots` (names, kinds, link targets, bytes), compiled
    Python files included: equal digests before and after a run mean it changed nothing there."""
    total = hashlib.sha256()
    for root in roots:
        total.update(f"root {root}\n".encode())
        if not root.exists():
            continue
        for path in sorted([root, *root.rglob("*")]):
            relative = path.relative_to(root).as_posix()
            if path.is_symlink():
                total.update(f"link {relative} {os.readlink(path)}\n".encode())
            elif path.is_dir():
                total.update(f"dir {relative}\n".encode())
            else:
                total.update(f"file {relative} {hashlib.sha256(path.read_bytes()).hexdigest()}\n".encode())
    return total.hexdigest()


@dataclass
class Sandbox:
    """A command's mounts, environment and limits, run under bubblewrap (`isolated`) or, for a local trial the
    user asked for, as a plain subprocess that sees the real paths."""

    isolated: bool = True
    mounts: list[tuple[str, str, bool]] = field(default_factory=list)
    """(path on this machine, path inside, writable)."""

    def __post_init__(self) -> None:
        require(self.isolated)

    def mount(self, host: Path, inside: str, *, writable: bool = False) -> str:
        """Make `host` visible to the command; the path the command sees it at."""
        self.mounts.append((str(host.resolve()), inside, writable))
        return inside if self.isolated else str(host.resolve())

    def run(self, argv: list[str], env: dict[str, str], cwd: str, timeout: float,
            tick: Callable[[], None] | None = None) -> subprocess.CompletedProcess:
        """Run argv with exactly `env` (plus PATH, HOME, a private /tmp) in `cwd`, calling `tick` every TICK_S
        seconds while it runs (to show its progress); past `timeout` seconds every process it started is killed and
        TimeoutExpired raised."""
        filter_fd = syscalls.descriptor() if self.isolated else None
        try:
            return _run(*self.command(argv, env, cwd, filter_fd), timeout, tick, filter_fd)
        finally:
            if filter_fd is not None:
                os.close(filter_fd)

    def start(self, argv: list[str], env: dict[str, str], cwd: str, stderr: IO[bytes]) -> subprocess.Popen:
        """Start argv as `run` would, in a session of its own, talking to the caller through pipes on its standard
        input and output (binary), its standard error going to `stderr`; the caller kills its session when done."""
        filter_fd = syscalls.descriptor() if self.isolated else None
        command, variables, directory = self.command(argv, env, cwd, filter_fd)
        try:
            return subprocess.Popen(command, env=variables, cwd=directory, stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=stderr, start_new_session=True,
                                    pass_fds=_passed(filter_fd))
        finally:
            if filter_fd is not None:
                os.close(filter_fd)

    def command(self, argv: list[str], env: dict[str, str], cwd: str, filter_fd: int | None = None
                ) -> tuple[list[str], dict[str, str] | None, str | None]:
        """(the command line, its environment, its working folder) that runs argv with exactly `env` (plus PATH,
        HOME, a private /tmp) in `cwd`, under bubblewrap, with the system-call filter bwrap reads from `filter_fd`
        (`syscalls`) and no user namespaces of its own, or, unsandboxed, as a plain process."""
        base = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "USER": "sandbox",
                "PYTHONDONTWRITEBYTECODE": "1", "PYTHONSAFEPATH": "1", "PYTHONNOUSERSITE": "1"}
        if not self.isolated:
            scratch = Path(cwd)
            variables = base | {"HOME": str(scratch), "TMPDIR": str(scratch), "MPLCONFIGDIR": str(scratch)} | env
            return argv, variables, cwd
        command = ["bwrap", "--unshare-all", "--unshare-user", "--uid", "65534", "--gid", "65534", "--cap-drop", "ALL",
                   "--disable-userns", "--die-with-parent", "--new-session", "--clearenv", "--dev", "/dev", "--proc",
                   "/proc", "--tmpfs", "/tmp"]
        if filter_fd is not None:
            command += ["--seccomp", str(filter_fd)]
        for path in [*SYSTEM, *python_paths()]:
            command += ["--ro-bind-try", path, path]
        for host, inside, writable in self.mounts:
            command += ["--bind" if writable else "--ro-bind", host, inside]
        variables = base | {"HOME": "/tmp", "TMPDIR": "/tmp", "MPLCONFIGDIR": "/tmp/matplotlib"} | env
        for key, value in variables.items():
            command += ["--setenv", key, value]
        command += ["--chdir", cwd, "--", *argv]
        return command, None, None


def _passed(fd: int | None) -> tuple[int, ...]:
    return () if fd is None else (fd,)


def _run(argv: list[str], env: dict[str, str] | None, cwd: str | None, timeout: float,
         tick: Callable[[], None] | None = None, filter_fd: int | None = None) -> subprocess.CompletedProcess:
    """subprocess.run in a session of its own (handed `filter_fd`), whose every process is killed when the time is
    up; `tick` is called every TICK_S seconds while it runs."""
    deadline = time.monotonic() + timeout
    with subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True, pass_fds=_passed(filter_fd)) as process:
        while True:
            left = max(deadline - time.monotonic(), 0.0)
            try:
                stdout, stderr = process.communicate(timeout=left if tick is None else min(left, TICK_S))
                break
            except subprocess.TimeoutExpired:  # retrying communicate loses no output
                if tick is None or time.monotonic() >= deadline:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.communicate()
                    raise
                tick()
    return subprocess.CompletedProcess(argv, process.returncode, stdout, stderr)
