"""Confine this process to a few paths and no network, with Linux's Landlock.

What loads or runs an uploaded model (the fold worker, ``:compare`` against the
source) calls ``confine`` once, before the model file is opened: from then on the
process may read only the Python installation and the paths it was given, write
only beneath the ``write`` paths, open no TCP connection and bind no TCP port,
signal no process outside itself and reach no abstract Unix socket. Landlock is
irreversible and inherited by every thread and child created afterwards, but in
Linux up to ABI 7 it does not reach threads that already exist: ``confine``
refuses (``ConfinementError``) unless the process is single-threaded at that
moment, so nothing keeps running unconfined beside the model.

No TensorFlow and no third-party import here: the serving process asks
``capability()`` what this kernel offers, without loading anything else.
The syscalls are made through ``ctypes`` (x86_64 and aarch64 numbers).
"""

from __future__ import annotations

import ctypes
import os
import platform
import site
import stat
import sys
import sysconfig
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

SYSCALLS = {  # landlock_create_ruleset, landlock_add_rule, landlock_restrict_self
    "x86_64": (444, 445, 446),
    "aarch64": (444, 445, 446),
}
PR_SET_NO_NEW_PRIVS = 38
CREATE_RULESET_VERSION = 1
RULE_PATH_BENEATH = 1

# LANDLOCK_ACCESS_FS_* (include/uapi/linux/landlock.h), with the ABI that added each
EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
REMOVE_DIR, REMOVE_FILE, MAKE_CHAR, MAKE_DIR = 1 << 4, 1 << 5, 1 << 6, 1 << 7
MAKE_REG, MAKE_SOCK, MAKE_FIFO, MAKE_BLOCK, MAKE_SYM = 1 << 8, 1 << 9, 1 << 10, 1 << 11, 1 << 12
REFER, TRUNCATE, IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15  # ABI 2, 3, 5
FS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 5: (1 << 16) - 1}
# LANDLOCK_ACCESS_NET_BIND_TCP | CONNECT_TCP (ABI 4); LANDLOCK_SCOPE_* (ABI 6)
NET_TCP = (1 << 0) | (1 << 1)
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1 << 0, 1 << 1

FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV
"""The rights a rule on a file (not a directory) may carry."""
READ = READ_FILE | READ_DIR
WRITE = (
    READ | WRITE_FILE | TRUNCATE | REMOVE_DIR | REMOVE_FILE | MAKE_DIR | MAKE_REG | MAKE_SYM | REFER
)

SYSTEM_READ = (
    "/usr/lib",
    "/usr/lib64",
    "/lib",
    "/lib64",
    "/usr/share/zoneinfo",
    "/etc/ld.so.cache",
    "/etc/localtime",
    "/proc/cpuinfo",
    "/proc/meminfo",
    "/proc/sys/kernel/osrelease",
    "/sys/devices",  # CPUs, and what ONNX Runtime's device discovery lists
    "/sys/bus/pci/devices",
    "/sys/fs/cgroup",
    "/dev/urandom",
    "/dev/random",
    "/dev/zero",
)
"""Shared libraries and what TensorFlow asks the system (CPUs, memory, cgroup quota)."""
SYSTEM_WRITE = ("/dev/null",)
OWN_PROCESS = "/proc/self"
"""Read, and written to name threads (``/proc/self/task/<tid>/comm``): only this
process's own entry (Landlock's ptrace rules keep other processes' out of reach)."""


class ConfinementError(RuntimeError):
    """This process could not be confined as asked."""


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


@dataclass(frozen=True)
class Capability:
    """What this kernel lets an unprivileged process confine itself to."""

    abi: int  # the Landlock ABI version; 0: none

    @property
    def files(self) -> bool:
        return self.abi >= 1

    @property
    def network(self) -> bool:
        return self.abi >= 4

    @property
    def mechanism(self) -> str:
        return f"landlock abi {self.abi}" if self.abi else "none"

    def to_dict(self) -> dict[str, object]:
        """As ``GET /v2`` shows it: ``{"files": true, "network": true, "mechanism": ...}``."""
        return {"files": self.files, "network": self.network, "mechanism": self.mechanism}

    def describe(self) -> str:
        """One line for the server's log."""
        if self.files and self.network:
            return f"model code is confined ({self.mechanism}): files and TCP"
        if self.files:
            return (
                f"model code is confined for files only ({self.mechanism}: no TCP rules "
                "before ABI 4): an uploaded model could open network connections"
            )
        return (
            "model code is NOT confined (this kernel has no Landlock): an uploaded model "
            "that slips past the scans can read and write what the server can"
        )


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux") or platform.machine() not in SYSCALLS:
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def capability() -> Capability:
    """The Landlock ABI this kernel offers (0 off Linux, on other machines, or disabled)."""
    libc = _libc()
    if libc is None:
        return Capability(0)
    create = SYSCALLS[platform.machine()][0]
    flags = ctypes.c_uint32(CREATE_RULESET_VERSION)
    version = libc.syscall(create, None, ctypes.c_size_t(0), flags)
    return Capability(max(int(version), 0))


def python_paths() -> list[Path]:
    """The Python installation: prefixes, the standard library, site-packages, and the
    directories of the packages this process imports lazily (``folding``, ``service``)."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    paths.update(sysconfig.get_paths().values())
    paths.update(site.getsitepackages())
    if site.ENABLE_USER_SITE and site.getusersitepackages():
        paths.add(site.getusersitepackages())
    here = Path(__file__).resolve().parent
    paths.update({str(here), str(here.parent / "service")})
    return [Path(path) for path in sorted(paths)]


def threads() -> int:
    """Threads of this process now (1 on systems without /proc)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 1


def confine(
    read: Iterable[Path | str] = (),
    write: Iterable[Path | str] = (),
    *,
    python: bool = True,
) -> Capability:
    """Restrict this process, irreversibly, to reading ``read`` (files or directory
    trees), reading and writing beneath ``write``, and no TCP, as far as the kernel
    allows; what it could do is returned. ``python``: the Python installation and the
    system libraries are readable too. Paths that do not exist are left out.

    Raises ``ConfinementError`` when Landlock is there but the restriction fails, or
    when other threads exist (they would stay unconfined)."""
    found = capability()
    if not found.files:
        return found
    libc = _libc()
    assert libc is not None  # capability() found Landlock, so libc and the syscalls exist
    create, add_rule, restrict = SYSCALLS[platform.machine()]
    running = threads()
    if running != 1:
        raise ConfinementError(
            f"cannot confine a process that runs {running} threads: threads that exist "
            "before the restriction would stay unconfined"
        )
    handled_fs = FS_BY_ABI[max(key for key in FS_BY_ABI if key <= found.abi)]
    attr = _RulesetAttr(
        handled_access_fs=handled_fs,
        handled_access_net=NET_TCP if found.network else 0,
        scoped=SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if found.abi >= 6 else 0,
    )
    ruleset = libc.syscall(create, ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)), 0)
    if ruleset < 0:
        raise ConfinementError(f"landlock_create_ruleset failed: {_error()}")
    try:
        readable = [*read, *(python_paths() if python else ()), *(SYSTEM_READ if python else ())]
        for path in readable:
            _allow(libc, add_rule, ruleset, Path(path), READ & handled_fs)
        for path in [*write, *(SYSTEM_WRITE if python else ())]:
            _allow(libc, add_rule, ruleset, Path(path), WRITE & handled_fs)
        if python:
            _allow(libc, add_rule, ruleset, Path(OWN_PROCESS), READ | WRITE_FILE)
        if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise ConfinementError(f"prctl(PR_SET_NO_NEW_PRIVS) failed: {_error()}")
        if libc.syscall(restrict, ruleset, 0) != 0:
            raise ConfinementError(f"landlock_restrict_self failed: {_error()}")
    finally:
        os.close(ruleset)
    return found


def _allow(libc: ctypes.CDLL, add_rule: int, ruleset: int, path: Path, rights: int) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    except OSError as error:
        raise ConfinementError(f"cannot open {path} for a Landlock rule: {error}") from None
    try:
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            rights &= FILE_RIGHTS
        rule = _PathBeneathAttr(allowed_access=rights, parent_fd=fd)
        if libc.syscall(add_rule, ruleset, RULE_PATH_BENEATH, ctypes.byref(rule), 0) != 0:
            raise ConfinementError(f"landlock_add_rule on {path} failed: {_error()}")
    finally:
        os.close(fd)


def _error() -> str:
    number = ctypes.get_errno()
    return f"{os.strerror(number)} (errno {number})"
