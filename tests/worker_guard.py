"""What keeps a pytest-xdist run from waiting forever on a worker that is gone.

xdist talks to each worker over the worker's stdin and stdout pipes (execnet duplicates them to other descriptors).
A worker's death shows to the controller as the end of those pipes; but a process *forked* from the worker (a
DataLoader worker, a multiprocessing pool started with ``fork``) inherits every descriptor, the pipes included. If
the worker then dies (pytest-timeout's ``os._exit``, a crash) while such a child lives, the pipes stay open, the
controller never learns of the death and waits, with the dead worker left a zombie and the other one idle.

:func:`guard_worker` puts ``/dev/null`` in place of those two descriptors in every child forked from a worker (the
child never speaks to the controller), so a dead worker is seen at once: xdist reports "worker crashed while running
TEST", starts another worker, and the run fails instead of hanging.
"""

from __future__ import annotations

import os


def channel_descriptors(config) -> list[int]:
    """The descriptors of the worker's pipes to the xdist controller (empty outside an xdist worker)."""
    if not hasattr(config, "workerinput"):
        return []
    for plugin in config.pluginmanager.get_plugins():
        channel = getattr(plugin, "channel", None)
        io = getattr(getattr(channel, "gateway", None), "_io", None)
        if io is not None and hasattr(io, "outfile") and hasattr(io, "infile"):
            return [io.outfile.fileno(), io.infile.fileno()]
    return []


def _release(descriptors: list[int]) -> None:
    """In a forked child: the controller's pipes replaced by /dev/null (the numbers stay valid, the pipes are let go)."""
    null = os.open(os.devnull, os.O_RDWR)
    for fd in descriptors:
        try:
            os.dup2(null, fd, inheritable=False)
        except OSError:
            pass
    os.close(null)


def guard_worker(config) -> None:
    """In an xdist worker: forked children let go of the controller's pipes (see the module docstring)."""
    descriptors = channel_descriptors(config)
    if descriptors:
        os.register_at_fork(after_in_child=lambda: _release(descriptors))

