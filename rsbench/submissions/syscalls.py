"""The system calls a sandboxed process may not make: a seccomp filter bubblewrap installs before it starts it.

A submission needs files, memory, threads, pipes and time. It never needs to create namespaces (the
usual first step of a container escape), trace or read another process, mount file systems, reach the
kernel's key rings, load BPF programs or kernel modules, or open io_uring (a frequent source of kernel
exploits); each of those answers EPERM. `clone3` answers ENOSYS, so the C library falls back to `clone`,
whose namespace flags the filter can see (clone3 passes them in memory, where seccomp cannot look).
The filter is compiled by libseccomp (through `pyseccomp`) and handed to bwrap as a BPF program
(`--seccomp FD`); bwrap's `--disable-userns` also keeps the process from creating user namespaces.
"""

from __future__ import annotations

import errno
import os
import tempfile
from functools import lru_cache

from rsbench.errors import RsbenchError

DENIED = (
    "unshare", "setns",  # namespaces
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",  # other processes
    "mount", "umount2", "pivot_root", "chroot", "move_mount", "open_tree", "fsopen", "fsmount", "fsconfig", "fspick",
    "mount_setattr", "swapon", "swapoff", "quotactl",  # file systems
    "keyctl", "add_key", "request_key",  # the kernel's key rings
    "bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register",  # exploit aids
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load", "reboot", "syslog", "acct",
    "open_by_handle_at", "name_to_handle_at",  # the kernel and the host's files by handle
)
"""System calls that answer EPERM."""
NAMESPACE_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000)
"""clone's CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID and CLONE_NEWNET."""


@lru_cache(maxsize=1)
def program() -> bytes:
    """The compiled BPF program of the filter for this machine's architecture; refused in one line without
    libseccomp."""
    try:
        import pyseccomp as seccomp

        rules = seccomp.SyscallFilter(seccomp.ALLOW)
        for name in DENIED:
            rules.add_rule(seccomp.ERRNO(errno.EPERM), name)
        for flag in NAMESPACE_FLAGS:
            rules.add_rule(seccomp.ERRNO(errno.EPERM), "clone", seccomp.Arg(0, seccomp.MASKED_EQ, flag, flag))
        rules.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
        with tempfile.TemporaryFile() as compiled:
            rules.export_bpf(compiled)
            compiled.seek(0)
            return compiled.read()
    except (ImportError, OSError, RuntimeError) as error:
        raise RsbenchError(f"the sandbox's system-call filter cannot be built here ({error}); install libseccomp "
                           "(apt-get install libseccomp2) and pyseccomp") from None


def descriptor() -> int:
    """A file descriptor from which bwrap reads the program (`--seccomp FD`); the caller passes it to bwrap and
    closes it once bwrap has started."""
    fd = os.memfd_create("rsbench-seccomp", 0)
    os.write(fd, program())
    os.lseek(fd, 0, os.SEEK_SET)
    return fd
