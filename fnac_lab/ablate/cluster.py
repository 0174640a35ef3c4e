"""A grid's points as jobs of a Slurm cluster, submitted through submitit: what each point's job asks of the cluster
(:class:`ClusterOptions`), submitit's executor of the jobs, and a point's job (:class:`PointJob`), which submitit
requeues when Slurm stops it at its time limit or preempts it.

Output layout, beside the grid's own (:mod:`fnac_lab.ablate.runner`)::

    OUT/submitit/    submitit's files of each point's job: the pickled call and its result, the job's stdout
                     (JOBID_TASK_log.out) and stderr (JOBID_TASK_log.err), the sbatch script of the jobs
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import submitit

from ..utils import FnacError

#: How ``fnac-lab ablate`` runs a grid's points (``--executor``): in threads of its own process, or as Slurm jobs.
EXECUTORS = ("local", "slurm")
#: The option of ``fnac-lab ablate`` that sets each field of :class:`ClusterOptions`.
OPTIONS = {"partition": "--slurm-partition", "time": "--slurm-time", "gpus_per_point": "--gpus-per-point",
           "cpus_per_point": "--cpus-per-point"}
#: submitit's folder inside a grid's output folder.
SUBMITIT_FOLDER = "submitit"
#: The name of every point's job in Slurm's queue.
JOB_NAME = "fnac-lab-point"
#: How often the submitted jobs are looked at, in seconds (submitit reads Slurm's ``sacct`` less often).
POLL_SECONDS = {"slurm": 10.0, "local": 0.5}
_NUMBER = re.compile(r"[0-9]+")


def slurm_minutes(value: Any, option: str = OPTIONS["time"]) -> int:
    """A time limit in one of Slurm's forms (``sbatch --time``: ``MINUTES``, ``MINUTES:SECONDS``,
    ``HOURS:MINUTES:SECONDS``, ``DAYS-HOURS``, ``DAYS-HOURS:MINUTES``, ``DAYS-HOURS:MINUTES:SECONDS``) in whole
    minutes, seconds rounded up; anything else, or no time at all, is refused in one line naming ``option``."""
    text = str(value).strip()
    days, dash, clock = text.partition("-")
    if not dash:
        days, clock = "0", text
    parts = clock.split(":")
    if not all(_NUMBER.fullmatch(p) for p in [days, *parts]) or len(parts) > 3:
        raise FnacError(f"{option} {value!r}: not a Slurm time limit (MINUTES, HOURS:MINUTES:SECONDS or "
                        f"DAYS-HOURS:MINUTES:SECONDS)")
    numbers = [int(p) for p in parts]
    if dash:  # DAYS-HOURS[:MINUTES[:SECONDS]]
        hours, minutes, seconds = (numbers + [0, 0])[:3]
    elif len(numbers) == 3:  # HOURS:MINUTES:SECONDS
        hours, minutes, seconds = numbers
    else:  # MINUTES[:SECONDS]
        hours, minutes, seconds = 0, numbers[0], numbers[1] if len(numbers) == 2 else 0
    total = math.ceil((((int(days) * 24 + hours) * 60 + minutes) * 60 + seconds) / 60)
    if total < 1:
        raise FnacError(f"{option} {value!r}: a job needs a time limit of at least one minute")
    return total


def _count(value: Any, option: str, minimum: int) -> int:
    """``value`` as a whole number of at least ``minimum``, or one line naming ``option``."""
    text = str(value).strip()
    if isinstance(value, bool) or not _NUMBER.fullmatch(text) or int(text) < minimum:
        raise FnacError(f"{option} {value!r}: must be a whole number of {minimum} or more")
    return int(text)


@dataclass(frozen=True)
class ClusterOptions:
    """What each point's job asks of the cluster, checked on construction (each refusal one line naming the option
    of ``fnac-lab ablate``). Values may be given as text, as on the command line."""

    partition: str | None = None  #: --slurm-partition: the partition, or several comma-separated; None: the default
    time: Any = "4:00:00"  #: --slurm-time: each job's time limit, in Slurm's forms (minutes, H:MM:SS, D-HH:MM:SS)
    gpus_per_point: Any = 1  #: --gpus-per-point: GPUs of each point's job (0: none)
    cpus_per_point: Any = None  #: --cpus-per-point: CPU cores of each point's job; None: the partition's default
    #: submitit's executor: slurm, or local (submitit's LocalExecutor: each job a process of this machine, no cluster)
    cluster: str = "slurm"

    def __post_init__(self):
        if self.cluster not in ("slurm", "local"):
            raise FnacError(f"cluster {self.cluster!r}: submitit's executors here are slurm and local")
        if self.partition is not None and not re.fullmatch(r"[A-Za-z0-9_.-]+(,[A-Za-z0-9_.-]+)*", self.partition):
            raise FnacError(f"{OPTIONS['partition']} {self.partition!r}: not a partition name (letters, digits, '_', '.', "
                            f"'-'; several separated by commas)")
        object.__setattr__(self, "time", slurm_minutes(self.time))
        object.__setattr__(self, "gpus_per_point", _count(self.gpus_per_point, OPTIONS["gpus_per_point"], 0))
        if self.cpus_per_point is not None:
            object.__setattr__(self, "cpus_per_point", _count(self.cpus_per_point, OPTIONS["cpus_per_point"], 1))


def executor_options(executor: str, **slurm: Any) -> ClusterOptions | None:
    """What ``fnac-lab ablate --executor EXECUTOR`` runs a grid's points with: None for the local executor (threads of
    this process), or the :class:`ClusterOptions` of ``slurm`` (fields left None take their defaults). An executor
    not in :data:`EXECUTORS`, and an option of Slurm's given to the local executor, are refused in one line."""
    given = {name: value for name, value in slurm.items() if value is not None}
    if executor == "slurm":
        return ClusterOptions(**given)
    if executor != "local":
        raise FnacError(f"--executor {executor!r}: must be one of {', '.join(EXECUTORS)}")
    if given:
        raise FnacError(f"{OPTIONS[next(iter(given))]}: an option of --executor slurm, and the points run locally "
                        f"(--executor local)")
    return None


def point_executor(out: Path, options: ClusterOptions, *, at_once: int | None = None) -> submitit.AutoExecutor:
    """submitit's executor of a grid's point jobs, writing into ``out/submitit``: one task on one node per point, with
    ``options``' partition, time limit, GPUs and CPU cores; with ``at_once``, at most that many of the grid's jobs run
    at a time (the job array's parallelism). Outside a Slurm cluster (no ``srun``) the slurm executor is refused in
    one line."""
    try:
        executor = submitit.AutoExecutor(folder=out / SUBMITIT_FOLDER, cluster=options.cluster)
    except RuntimeError:  # submitit finds no srun
        raise FnacError("--executor slurm: srun is not on this machine's PATH; run fnac-lab ablate on a machine of "
                        "the Slurm cluster, such as its login node") from None
    executor.update_parameters(name=JOB_NAME, nodes=1, tasks_per_node=1, timeout_min=options.time,
                               gpus_per_node=options.gpus_per_point, cpus_per_task=options.cpus_per_point,
                               slurm_partition=options.partition, slurm_array_parallelism=at_once)
    return executor


class PointJob(submitit.helpers.Checkpointable):
    """One point's run as a submitit job: calls ``run`` with the job's arguments. When Slurm stops the job at its time
    limit or preempts it, submitit requeues the same call (at most three times); the point then runs again, and the
    training notebook resumes from its last checkpoint."""

    def __init__(self, run: Callable[..., Any]):
        self.run = run

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.run(*args, **kwargs)
