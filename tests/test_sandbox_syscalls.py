"""The sandbox denies the system calls a submission never needs (seccomp) and user namespaces of its own
(bwrap --disable-userns): each call below is made inside the sandbox and answers EPERM, where outside it answers
otherwise (or, for those that need privileges anyway, EPERM too), while threads and processes still start."""

from __future__ import annotations

import errno
import json
import os
import sys

import pyseccomp
import pytest

from rsbench.submissions import sandbox, syscalls
from rsbench.submissions.sandbox import Sandbox

CLONE_NEWUSER, CLONE_NEWNET = 0x10000000, 0x40000000
CALLS = {  # name: arguments (null pointers, bad descriptors, no such process: the kernel answers before acting)
    "unshare": [CLONE_NEWUSER], "setns": [-1, 0], "ptrace": [3, 0, 0, 0], "process_vm_readv": [1, 0, 0, 0, 0, 0],
    "mount": [0, 0, 0, 0, 0], "umount2": [0, 0], "pivot_root": [0, 0], "chroot": [0], "keyctl": [0, -1, 0, 0, 0],
    "add_key": [0, 0, 0, 0, 0], "request_key": [0, 0, 0, 0], "bpf": [0, 0, 0], "perf_event_open": [0, 0, -1, -1, 0],
    "userfaultfd": [0], "io_uring_setup": [1, 0], "init_module": [0, 0, 0], "finit_module": [-1, 0, 0],
    "kexec_load": [0, 0, 0, 0], "open_by_handle_at": [-1, 0, 0],
}
PROBE = """
import ctypes, json, os, sys, threading
libc = ctypes.CDLL(None, use_errno=True)
answers = {}
for name, (number, args) in json.loads(sys.argv[1]).items():
    result = libc.syscall(number, *[ctypes.c_long(a) for a in args])
    answers[name] = 0 if result >= 0 else ctypes.get_errno()
done = []
thread = threading.Thread(target=lambda: done.append(1))
thread.start(); thread.join()
pid = os.fork()
if pid == 0:
    os._exit(7)
answers["thread and fork"] = [len(done), os.waitpid(pid, 0)[1] >> 8]
print(json.dumps(answers))
"""


@pytest.fixture
def isolated() -> None:
    reason = sandbox.unavailable()
    if reason and os.environ.get("CI"):
        pytest.fail(f"CI must test the sandbox (.ci/run installs bubblewrap): {reason}")
    if reason:
        pytest.skip(reason)


def calls(names: dict[str, list[int]]) -> str:
    arch = pyseccomp.system_arch()
    return json.dumps({name: [pyseccomp.resolve_syscall(arch, name), args] for name, args in names.items()})


def test_every_system_call_a_submission_never_needs_is_denied(isolated: None, tmp_path) -> None:
    assert set(CALLS) <= set(syscalls.DENIED)
    done = Sandbox(True).run([sys.executable, "-c", PROBE, calls(CALLS)], {}, "/tmp", timeout=60)
    assert done.returncode == 0, done.stderr
    answers = json.loads(done.stdout)
    assert answers.pop("thread and fork") == [1, 7]
    assert answers == {name: errno.EPERM for name in CALLS}
    outside = json.loads(sandbox._run([sys.executable, "-c", PROBE, calls(CALLS)], None, None, 60).stdout)
    for name in ("setns", "ptrace", "process_vm_readv", "keyctl", "io_uring_setup", "perf_event_open"):
        assert outside[name] != errno.EPERM, name  # EPERM in the sandbox comes from the filter, not the kernel


def test_the_sandbox_may_not_create_user_namespaces_even_without_the_filter(isolated: None) -> None:
    """bwrap --disable-userns on its own: unshare(CLONE_NEWUSER) fails with ENOSPC (no user namespace may be
    created below the sandbox's), not with the filter's EPERM."""
    box = Sandbox(True)
    command, _, _ = box.command([sys.executable, "-c", PROBE, calls({"unshare": [CLONE_NEWUSER | CLONE_NEWNET]})], {},
                                "/tmp", None)
    assert "--disable-userns" in command and "--seccomp" not in command
    done = sandbox._run(command, None, None, 60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["unshare"] == errno.ENOSPC
