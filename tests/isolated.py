"""Python code run in a process of its own, in a session of its own: where a test sends a signal to "its own"
process, the signal reaches that child, never the test runner (a signal the runner's worker receives at the wrong
instant ends the worker)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys


def run_isolated(code: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -c CODE ARGS`` in a new session, its output captured; on ``timeout`` the whole session is killed and
    :class:`subprocess.TimeoutExpired` raised."""
    proc = subprocess.Popen([sys.executable, "-c", code, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
