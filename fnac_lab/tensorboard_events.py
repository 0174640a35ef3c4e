"""A run's epochs as TensorBoard scalars: the event files in ``OUT/tensorboard/``, beside ``metrics.jsonl``.

Each epoch's record (a line of ``metrics.jsonl``) gives one scalar per value it holds, tagged ``SECTION/NAME`` with
``NAME`` the field's name in ``metrics.jsonl`` (the run names the section of each field); booleans are 0 and 1, and
the epoch, text and empty values are not scalars. Two scalars join them: ``optimiser/lr``, the learning rate, and
``optimiser/step_seconds``, the epoch's training seconds (``train_seconds``) per optimisation step. The epoch is the
global step.

The files are written afresh from the run's history whenever a run opens them, then extended epoch by epoch: a
resumed run (also one killed while it wrote) holds each epoch once, with the values of ``metrics.jsonl``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

#: The folder of a run's event files, inside its output folder (``tensorboard --logdir`` finds it there).
TENSORBOARD_DIR = "tensorboard"
#: A run's event files, relative to its output folder (TensorBoard names each after its time, host and process).
EVENT_FILES = f"{TENSORBOARD_DIR}/events.out.tfevents.*"
#: The field of an epoch's record holding its training seconds.
SECONDS_FIELD = "train_seconds"


def epoch_scalars(record: Mapping[str, Any], section: Callable[[str], str], *, lr: float,
                  steps: int) -> dict[str, float]:
    """The scalars of one epoch's ``record`` by tag: each value but the epoch, text and None, under
    ``section(name)/name``; the learning rate ``lr``; the training seconds per step over ``steps`` steps."""
    out = {f"{section(name)}/{name}": float(value) for name, value in record.items()
           if name != "epoch" and value is not None and not isinstance(value, str)}
    out["optimiser/lr"] = float(lr)
    out["optimiser/step_seconds"] = record[SECONDS_FIELD] / steps
    return out


def remove_event_files(out: Path) -> list[Path]:
    """Remove the event files of ``out`` (:data:`EVENT_FILES`); the paths removed."""
    found = sorted(out.glob(EVENT_FILES))
    for path in found:
        path.unlink()
    return found


class EpochEvents:
    """The event files of one run in ``out``, written afresh from ``history`` on opening (an earlier writing's files
    are removed first), then one epoch at a time by :meth:`add`, each flushed to disk at once. With ``enabled`` false
    it writes nothing and leaves ``out`` alone."""

    def __init__(self, out: Path, history: Iterable[Mapping[str, Any]], section: Callable[[str], str], *,
                 lr: float, steps: int, enabled: bool = True):
        self.section, self.lr, self.steps = section, lr, steps
        self.writer = None
        if not enabled:
            return
        from torch.utils.tensorboard import SummaryWriter

        remove_event_files(out)
        self.writer = SummaryWriter(log_dir=str(out / TENSORBOARD_DIR))
        for record in history:
            self._write(record)
        self.writer.flush()

    def _write(self, record: Mapping[str, Any]) -> None:
        for tag, value in epoch_scalars(record, self.section, lr=self.lr, steps=self.steps).items():
            self.writer.add_scalar(tag, value, global_step=int(record["epoch"]))

    def add(self, record: Mapping[str, Any]) -> None:
        """Write one epoch's ``record`` and flush it to disk."""
        if self.writer is not None:
            self._write(record)
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
