"""The suite cannot hang on a dead worker: a small pytest-xdist run in a session of its own, one of whose workers
dies while a child it forked lives on, ends at once and names the test; without ``worker_guard`` it waits forever.
A stuck test's stacks reach stderr (faulthandler), where xdist keeps them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent

DIES = '''
import os, time
from pathlib import Path

def test_dies_while_a_forked_child_lives():
    child = os.fork()
    if child == 0:  # the child sleeps on, holding whatever it inherited
        time.sleep(600)
        os._exit(0)
    Path(os.environ["ORPHAN_FILE"]).write_text(str(child))
    os._exit(1)  # the worker dies as pytest-timeout ends a stuck one
'''
SLOW = '''
import time

def test_waits_a_little():
    time.sleep(3)
'''
#: How ``make test`` runs xdist (Makefile): no worker is restarted after a crash, since xdist's ``loadfile``
#: scheduler fails with an internal error when it hands a crashed worker's files to a new one.
XDIST = ["-n", "2", "--dist", "loadfile", "--max-worker-restart", "0"]
GUARDED = "from worker_guard import guard_worker\n\n\ndef pytest_configure(config):\n    guard_worker(config)\n"


def run_inner(folder: Path, conftest: str, timeout: float, *options: str) -> tuple[subprocess.CompletedProcess | None, float]:
    """``pytest`` over ``folder`` as ``make test`` runs it, in a session of its own (killed whole when it outlives
    ``timeout``); the finished run (None when it had to be killed) and its seconds. Its output goes to a file: the
    forked child would hold a pipe open as it holds the worker's."""
    (folder / "conftest.py").write_text(conftest)
    env = {**os.environ, "PYTHONPATH": str(TESTS), "ORPHAN_FILE": str(folder / "orphan.pid"), "OMP_NUM_THREADS": "1"}
    log = folder / "output.txt"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "pytest", *XDIST, "-p", "no:cacheprovider", "-o", "addopts=",
                                 *options, str(folder)], cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    t0 = time.monotonic()
    try:
        code = proc.wait(timeout=timeout)
        return subprocess.CompletedProcess(proc.args, code, log.read_text(), ""), time.monotonic() - t0
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the inner run and every process of its session
        proc.wait()
        return None, time.monotonic() - t0
    finally:
        orphan = folder / "orphan.pid"
        if orphan.is_file():
            try:
                os.kill(int(orphan.read_text()), signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture
def inner(tmp_path) -> Path:
    (tmp_path / "test_dies.py").write_text(DIES)
    (tmp_path / "test_slow.py").write_text(SLOW)
    return tmp_path


def test_a_dead_worker_fails_the_run_at_once_and_names_its_test(inner):
    result, seconds = run_inner(inner, GUARDED, timeout=120)
    assert result is not None, "the run waited on its dead worker"
    assert result.returncode == 1 and seconds < 60, result.stdout
    assert "crashed while running 'test_dies.py::test_dies_while_a_forked_child_lives'" in result.stdout, result.stdout
    assert "1 passed" in result.stdout  # the other file ran to its end


def test_without_the_guard_the_run_waits_on_its_dead_worker(inner):
    """What the guard prevents, shown: the forked child holds the dead worker's pipes open."""
    result, seconds = run_inner(inner, "", timeout=15)
    assert result is None and seconds >= 15


def test_a_stuck_tests_stacks_reach_stderr(tmp_path):
    (tmp_path / "test_slow.py").write_text(SLOW)
    result, _ = run_inner(tmp_path, GUARDED, 120, "-o", "faulthandler_timeout=1")
    assert result is not None and result.returncode == 0, result.stdout
    assert "Timeout (0:00:01)!" in result.stdout and 'test_slow.py", line 5 in test_waits_a_little' in result.stdout
