"""Running a grid: one papermill execution of the notebook per point, each into its own folder, and the results.

Output layout::

    OUT/grid.json                     the resolved grid: its notebook (path and hash of its code cells), points
    OUT/points/NAME/notebook.ipynb    the executed notebook of a point (kept, also when it failed)
    OUT/points/NAME/metrics.json      written by the notebook (its ``out_dir`` parameter is the point's folder)
    OUT/points/NAME/done.json         finished marker, written atomically after a successful run: the notebook
                                      (path and hash) and the parameters it ran
    OUT/points/NAME/error.txt         why the point failed (removed when it later succeeds)
    OUT/results.csv                   one row per point: parameter columns, final metrics, status (finished,
                                      failed or not run: the point's state, whether it ran now or earlier)
    OUT/.fnac-lab.lock                held while the grid runs: a second run into OUT is refused (removed at the end)
    OUT/submitit/                     the points' jobs on a cluster (:mod:`fnac_lab.ablate.cluster`): submitit's files

The points run in threads of this process (``--executor local``), or each as a Slurm job submitted through submitit
(``--executor slurm``) while this process waits for them and holds the lock; skipping, ``results.csv`` and the
failed points' reports are the same either way.

A point whose ``done.json`` names the same notebook and parameters is skipped when the grid is run again; a failed
point does not stop the others and is run again next time (a training notebook resumes from its last checkpoint).

One ``OUT`` holds one grid's results. Running the same grid again resumes it, and so does a grid that keeps every
point of the recorded one and adds others (more seeds, another value): ``results.csv`` then grows, no row is
dropped. Any other grid (another notebook, a changed notebook, a point left out) is refused with one line before
anything is written: it would replace ``grid.json`` and ``results.csv`` and hide the first grid's rows.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd
import submitit
from tqdm.auto import tqdm

from ..papermill_engine import ENGINE_NAME
from ..utils import FnacError, Terminated, atomic_write_text, folder_lock, output_folder, write_json
from .cluster import POLL_SECONDS, ClusterOptions, PointJob, point_executor
from .grid import Grid, GridPoint, check_parameters, load_grid, notebook_parameters, parameter_names, value_label

DONE, ERROR, METRICS = "done.json", "error.txt", "metrics.json"


@dataclass
class PointOutcome:
    point: GridPoint
    folder: Path
    status: str  # "finished", "skipped" (finished earlier) or "failed"
    seconds: float = 0.0
    error: str = ""


@dataclass
class GridRun:
    results: pd.DataFrame
    outcomes: list[PointOutcome]
    out_dir: Path

    @property
    def failed(self) -> list[PointOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]


def _run_point(grid: Grid, point: GridPoint, folder: Path, *, kernel_name: str, device: str | None,
               timeout: float | None) -> PointOutcome:
    import papermill

    if is_finished(grid, point, folder):
        return PointOutcome(point, folder, "skipped")
    folder.mkdir(parents=True, exist_ok=True)
    for name in (DONE, METRICS):  # a finish of another notebook's (an earlier version's) run is not this point's
        (folder / name).unlink(missing_ok=True)
    values = {**point.parameters, grid.out_param: str(folder), **({"device": device} if device is not None else {})}
    params = notebook_parameters(values, parameter_names(grid))
    write_json(folder / "params.json", params)
    t0 = time.perf_counter()
    try:
        # The kernel starts in the point's folder (nbclient's resources path). Not papermill's cwd: that changes
        # the working directory of this whole process, which points running side by side in threads would race for.
        papermill.execute_notebook(str(grid.notebook), str(folder / "notebook.ipynb"), parameters=params,
                                   kernel_name=kernel_name, progress_bar=False, engine_name=ENGINE_NAME,
                                   resources={"metadata": {"path": str(folder)}}, execution_timeout=timeout)
        if not (folder / METRICS).is_file():
            raise FnacError(f"the notebook finished without writing {METRICS} into its {grid.out_param}")
    except Exception as exc:  # any failure of one point is recorded and the sweep goes on
        if isinstance(exc, papermill.PapermillExecutionError):
            message = f"{exc.ename}: {exc.evalue} (see {folder / 'notebook.ipynb'})"
        else:
            message = f"{type(exc).__name__}: {exc}"
        atomic_write_text(folder / ERROR, message + "\n\n" + traceback.format_exc())
        return PointOutcome(point, folder, "failed", time.perf_counter() - t0, message)
    seconds = time.perf_counter() - t0
    (folder / ERROR).unlink(missing_ok=True)
    write_json(folder / DONE, {**grid.runs, "parameters": point.parameters, "seconds": round(seconds, 2)})
    return PointOutcome(point, folder, "finished", seconds)


def is_finished(grid: Grid, point: GridPoint, folder: Path) -> bool:
    """Whether ``folder`` holds a finished run of ``point``: a ``done.json`` naming the grid's notebook, the hash of
    its code cells and the point's parameters."""
    try:
        done = json.loads((folder / DONE).read_text())
    except (OSError, ValueError):
        return False
    return (isinstance(done, dict) and {k: done.get(k) for k in grid.runs} == grid.runs
            and done.get("parameters") == json.loads(json.dumps(point.parameters)))


def check_out_folder(grid: Grid, out: Path) -> None:
    """Refuse a grid that is not the one ``out`` holds (``grid.json``), nor that one extended by more points."""
    path = out / "grid.json"
    if not path.is_file():
        return
    try:
        recorded = json.loads(path.read_text())
    except ValueError as exc:
        raise FnacError(f"{path}: not readable ({exc}); use another --out") from None
    if not isinstance(recorded, dict) or "notebook_sha256" not in recorded or "points" not in recorded:
        raise FnacError(f"{path}: written by an earlier version of fnac-lab, without the notebook's hash and the "
                        f"points; use another --out")
    if {k: recorded.get(k) for k in grid.runs} != grid.runs:
        raise FnacError(f"{out}: holds the results of a grid over notebook {recorded['notebook']} (code cells "
                        f"{recorded['notebook_sha256'][:12]}), and this grid runs {grid.notebook} (code cells "
                        f"{grid.notebook_sha256[:12]}); use another --out")
    names = {p.name for p in grid.points()}
    left_out = [name for name in recorded["points"] if name not in names]
    if left_out:
        raise FnacError(f"{out}: holds the results of another grid, {len(left_out)} of whose {len(recorded['points'])} "
                        f"points this one leaves out (first: {left_out[0]}); use another --out, or a grid that keeps "
                        f"every point")


def run_grid(grid: Grid | str | Path, out_dir: str | Path, *, jobs: int | None = None,
             devices: Sequence[str] | None = None, kernel_name: str = "python3", timeout: float | None = None,
             progress: bool = True, cluster: ClusterOptions | None = None) -> GridRun:
    """Run every point of ``grid`` (a :class:`Grid` or a grid file) into ``out_dir`` and collect ``results.csv``.

    ``jobs`` points run at once (default 1), in threads of this process; with ``devices`` (e.g.
    ``["cuda:0", "cuda:1"]``) each running point gets one of them as its ``device`` parameter and ``jobs`` defaults
    to their number. With ``cluster`` every point not finished yet is a job of the cluster instead
    (:mod:`.cluster`, through submitit), and this process waits for them; ``jobs`` then caps how many run at a time
    (default: as many as the cluster gives), and ``devices`` is refused (a job has the GPUs it asks for).
    Points finished earlier are skipped; failures are recorded in ``error.txt`` and in the results, never raised.
    """
    if jobs is not None and jobs < 1:
        raise FnacError(f"jobs={jobs}: the number of points run at once must be 1 or more")
    if cluster is not None and devices:
        raise FnacError("--devices: each job of the cluster uses the GPUs it asks for (--gpus-per-point); "
                        "devices are handed out by --executor local")
    grid = load_grid(grid) if isinstance(grid, (str, Path)) else grid
    check_parameters(grid)
    out = output_folder(os.path.expanduser(out_dir)).resolve()  # kernels run inside their point folders: absolute
    with folder_lock(out):  # another grid run into out is refused; the points' runs lock their own folders
        check_out_folder(grid, out)
        executor = point_executor(out, cluster, at_once=jobs) if cluster is not None else None  # no srun: refused
        (out / "points").mkdir(parents=True, exist_ok=True)
        write_json(out / "grid.json", grid.record())
        points, outcomes = grid.points(), []
        try:
            if cluster is None:
                _run_in_threads(grid, out, points, outcomes, jobs=jobs or 1, devices=devices, kernel_name=kernel_name,
                                timeout=timeout, progress=progress)
            else:
                _run_as_jobs(grid, out, points, outcomes, executor, poll=POLL_SECONDS[cluster.cluster],
                             kernel_name=kernel_name, timeout=timeout, progress=progress)
        except KeyboardInterrupt:
            # results.csv records what finished; rerunning the command skips those points
            collect_results(grid, out, outcomes)
            raise
        order = {point.name: i for i, point in enumerate(points)}
        outcomes.sort(key=lambda o: order[o.point.name])
        return GridRun(results=collect_results(grid, out, outcomes), outcomes=outcomes, out_dir=out)


def _stop_kernels() -> None:
    """Pass SIGTERM on to the running kernels (this process's children): a scheduler or ``docker stop`` may signal
    this process alone, and its kernels would train on unseen. Their deaths are then no news: papermill's log of
    them is silenced (each stopped point still records it in its error.txt)."""
    try:
        import psutil
    except ImportError:
        return
    logging.getLogger("papermill").setLevel(logging.CRITICAL)
    for child in psutil.Process().children():
        try:
            child.terminate()
        except psutil.Error:
            pass


def _progress_bar(total: int, postfix: str, progress: bool) -> tqdm:
    """The bar of a grid's points. It counts points as they finish, in any order; until the first one has, it shows
    the time elapsed and ``postfix`` (how many run at once), not a rate it cannot know yet."""
    return tqdm(total=total, desc="grid points", disable=not progress, postfix=postfix,
                bar_format="{desc}: {n_fmt}/{total_fmt} finished |{bar}| {elapsed} elapsed, {remaining} left{postfix}")


def _run_in_threads(grid: Grid, out: Path, points: list[GridPoint], outcomes: list[PointOutcome], *, jobs: int,
                    devices: Sequence[str] | None, kernel_name: str, timeout: float | None, progress: bool) -> None:
    """Run ``points`` in ``jobs`` threads of this process (one per device of ``devices``), adding each outcome to
    ``outcomes`` as it comes."""
    if devices:
        jobs = len(devices)
    free: queue.Queue = queue.Queue()
    for d in (devices or [None] * jobs):
        free.put(d)

    def work(point: GridPoint) -> PointOutcome:
        device = free.get()
        try:
            return _run_point(grid, point, out / "points" / point.name, kernel_name=kernel_name, device=device,
                              timeout=timeout)
        finally:
            free.put(device)

    pool = ThreadPoolExecutor(max_workers=jobs)
    with _progress_bar(len(points), f"{min(len(points), jobs)} at once", progress) as bar:
        try:
            pending = {pool.submit(work, point) for point in points}
            while pending:
                done, pending = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
                outcomes.extend(future.result() for future in done)
                if done:
                    bar.update(len(done))
                else:
                    bar.refresh()  # the elapsed time moves on while points run
        except KeyboardInterrupt as exc:
            # Ctrl-C reaches the running kernels too (one process group): they stop, and no new point starts.
            # SIGTERM is passed on.
            if isinstance(exc, Terminated):
                _stop_kernels()
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    pool.shutdown()


def _run_as_jobs(grid: Grid, out: Path, points: list[GridPoint], outcomes: list[PointOutcome],
                 executor: submitit.Executor, *, poll: float, kernel_name: str, timeout: float | None,
                 progress: bool) -> None:
    """Submit each of ``points`` not finished yet through ``executor`` (:func:`.cluster.point_executor`; one job
    array) and wait for them, looking every ``poll`` seconds, adding each outcome to ``outcomes`` as it comes.
    Ctrl-C or SIGTERM cancels the jobs still queued or running."""
    folders = {point.name: out / "points" / point.name for point in points}
    todo = [point for point in points if not is_finished(grid, point, folders[point.name])]
    outcomes.extend(PointOutcome(p, folders[p.name], "skipped") for p in points if p not in todo)
    submitted = []
    if todo:
        with executor.batch():
            jobs = [executor.submit(PointJob(_run_point), grid, point, folders[point.name], kernel_name=kernel_name,
                                    device=None, timeout=timeout) for point in todo]
        submitted = list(zip(todo, jobs))
    with _progress_bar(len(points), f"{len(todo)} jobs submitted", progress) as bar:
        bar.update(len(points) - len(todo))
        try:
            while submitted:
                done = [(point, job) for point, job in submitted if job.done()]
                submitted = [(point, job) for point, job in submitted if (point, job) not in done]
                outcomes.extend(_job_outcome(job, point, folders[point.name]) for point, job in done)
                if done:
                    bar.update(len(done))
                else:
                    bar.refresh()
                    time.sleep(poll)
        except KeyboardInterrupt:
            for _, job in submitted:
                job.cancel(check=False)
            raise


def _job_outcome(job: submitit.Job, point: GridPoint, folder: Path) -> PointOutcome:
    """The outcome a point's ended job returned. A job that ended without one (cancelled, out of its time limit or
    memory, its node lost) is a failed point: its ``error.txt`` holds submitit's report of the job."""
    try:
        return job.result()
    except Exception as exc:  # submitit's UncompletedJobError, FailedJobError: the job's state and its log
        report = str(exc).strip()
        message = f"job {job.job_id} ended without a result: {report.splitlines()[0] if report else type(exc).__name__}"
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(folder / ERROR, f"{message} (its log: {job.paths.stderr})\n\n{report}\n")
        return PointOutcome(point, folder, "failed", error=message)


def flatten_metrics(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Scalars of a ``metrics.json`` with nested mappings joined by ``_`` (``baseline.ap50`` -> ``baseline_ap50``);
    lists and the ``config`` entry are left out."""
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        if key == "config" or isinstance(value, (list, tuple)):
            continue
        if isinstance(value, Mapping):
            out.update(flatten_metrics(value, f"{prefix}{key}_"))
        else:
            out[f"{prefix}{key}"] = value
    return out


def collect_results(grid: Grid, out_dir: str | Path, outcomes: Sequence[PointOutcome] | None = None) -> pd.DataFrame:
    """``results.csv``: one row per point with its axis values (mappings expanded into their parameters), the
    flattened metrics of its ``metrics.json``, its status and error. Written atomically into ``out_dir``."""
    out = Path(out_dir)
    by_name = {o.point.name: o for o in outcomes or []}
    rows = []
    for point in grid.points():
        folder = out / "points" / point.name
        row: dict[str, Any] = {}
        for axis, value in point.values.items():
            row[axis] = value_label(value) if isinstance(value, Mapping) else value
            if isinstance(value, Mapping):
                row.update(value)
        outcome = by_name.get(point.name)
        finished = is_finished(grid, point, folder)
        failed = outcome is not None and outcome.status == "failed"
        # the point's state, whether it ran now or earlier ("skipped" is what this invocation did, not a state)
        row["status"] = "failed" if failed else ("finished" if finished else "not run")
        row["error"] = outcome.error if failed else ""
        if finished and (folder / METRICS).is_file():
            row.update(flatten_metrics(json.loads((folder / METRICS).read_text())))
        row["folder"] = str(folder)
        rows.append(row)
    table = pd.DataFrame(rows)
    atomic_write_text(out / "results.csv", table.to_csv(index=False))
    return table
