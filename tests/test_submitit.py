"""Grids run as cluster jobs through submitit: two points as jobs of submitit's LocalExecutor (no Slurm needed) and a
rerun that skips them, a failed point's report, the Slurm options as the executor's parameters, bad options in one
line."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from nbformat.v4 import new_code_cell, new_notebook
from submitit.core.utils import UncompletedJobError

from fnac_lab import ablate
from fnac_lab.ablate.cluster import JOB_NAME, ClusterOptions, PointJob, point_executor, slurm_minutes
from fnac_lab.ablate.runner import _job_outcome
from fnac_lab.cli import main

REPO = Path(__file__).resolve().parents[1]
#: A notebook that needs no torch: it writes metrics derived from ``x``, or fails while ``fail_flag`` exists.
BODY = """
import json, os, pathlib
if fail_flag and pathlib.Path(fail_flag).exists():
    raise RuntimeError(f"deliberate crash at x={x}")
pathlib.Path(out_dir, "metrics.json").write_text(json.dumps({"ap50": x / 10, "job": os.environ["SUBMITIT_LOCAL_JOB_ID"]}))
"""
#: The points' jobs as processes of this machine (submitit's LocalExecutor), without GPUs.
LOCAL_JOBS = ClusterOptions(cluster="local", gpus_per_point=0, time=5)


@pytest.fixture(scope="module")
def toy_notebook(tmp_path_factory) -> Path:
    params = new_code_cell('x = 0\nfail_flag = None\nout_dir = None')
    params.metadata["tags"] = ["parameters"]
    nb = new_notebook(cells=[params, new_code_cell(BODY)],
                      metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    path = tmp_path_factory.mktemp("toy") / "toy.ipynb"
    nbformat.write(nb, path)
    return path


def test_points_run_as_jobs_and_a_rerun_skips_the_finished(toy_notebook, tmp_path):
    flag = tmp_path / "fail-now"
    flag.write_text("")
    grid = ablate.make_grid(toy_notebook, grid=[{"x": [2]}, {"x": [5], "fail_flag": [str(flag)]}])
    out = tmp_path / "sweep"
    run = ablate.run_grid(grid, out, cluster=LOCAL_JOBS, timeout=300, progress=False)
    assert [(o.point.values["x"], o.status) for o in run.outcomes] == [(2, "finished"), (5, "failed")]
    results = pd.read_csv(out / "results.csv")
    assert results["status"].tolist() == ["finished", "failed"]
    assert results["ap50"].iloc[0] == pytest.approx(0.2) and pd.isna(results["ap50"].iloc[1])
    assert "deliberate crash at x=5" in results["error"].iloc[1]
    finished, failed = run.outcomes[0].folder, run.failed[0].folder
    assert "deliberate crash" in (failed / ablate.ERROR).read_text() and not (failed / ablate.DONE).exists()
    # the point ran in a job of its own, whose files lie in the grid's submitit folder
    job = json.loads((finished / ablate.METRICS).read_text())["job"]
    assert (out / "submitit" / f"{job}_0_log.out").is_file()
    assert len(list((out / "submitit").glob("*_submitted.pkl"))) == 2
    stamp = (finished / "notebook.ipynb").stat().st_mtime_ns

    flag.unlink()
    rerun = ablate.run_grid(grid, out, cluster=LOCAL_JOBS, timeout=300, progress=False)
    assert [o.status for o in rerun.outcomes] == ["skipped", "finished"]
    assert len(list((out / "submitit").glob("*_submitted.pkl"))) == 3  # one job more: the failed point's
    assert (finished / "notebook.ipynb").stat().st_mtime_ns == stamp  # the finished point did not run again
    assert pd.read_csv(out / "results.csv")["ap50"].tolist() == pytest.approx([0.2, 0.5])
    assert pd.read_csv(out / "results.csv")["status"].tolist() == ["finished", "finished"]
    assert not (failed / ablate.ERROR).exists()
    assert not (out / ".fnac-lab.lock").exists()


class EndedJob:
    """A job that Slurm ended without a result, as submitit reports it."""

    job_id = "4242_1"

    class paths:
        stderr = Path("/cluster/sweep/submitit/4242_1_0_log.err")

    def result(self):
        raise UncompletedJobError("Job 4242_1 (task: 0) with path /cluster/sweep/submitit/4242_1_0_result.pkl\n"
                                  "has not produced any output (state: TIMEOUT)")


def test_a_job_ended_without_a_result_is_a_failed_point_with_its_report(toy_notebook, tmp_path):
    point = ablate.make_grid(toy_notebook, grid={"x": [1]}).points()[0]
    outcome = _job_outcome(EndedJob(), point, tmp_path / "point")
    assert outcome.status == "failed"
    assert outcome.error == "job 4242_1 ended without a result: Job 4242_1 (task: 0) with path " \
                            "/cluster/sweep/submitit/4242_1_0_result.pkl"
    report = (tmp_path / "point" / ablate.ERROR).read_text()
    assert "state: TIMEOUT" in report and "4242_1_0_log.err" in report


def test_slurm_options_are_the_executors_parameters(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")  # submitit looks for srun on PATH; nothing runs it here
    (bin_dir / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    options = ClusterOptions(partition="gpu,gpu-long", time="1-02:30", gpus_per_point="2", cpus_per_point="12")
    executor = point_executor(tmp_path / "sweep", options, at_once=3)
    assert executor.cluster == "slurm"
    assert executor.folder == tmp_path / "sweep" / "submitit"
    params = executor.parameters
    assert params["partition"] == "gpu,gpu-long"
    assert params["time"] == 26 * 60 + 30  # one day, two hours and a half
    assert params["gpus_per_node"] == 2 and params["cpus_per_task"] == 12
    assert params["nodes"] == 1 and params["ntasks_per_node"] == 1
    assert params["array_parallelism"] == 3 and params["job_name"] == JOB_NAME
    # left out: the partition and the CPU cores are the cluster's own defaults; one GPU per point
    params = point_executor(tmp_path / "other", ClusterOptions(time=90)).parameters
    assert "partition" not in params and "cpus_per_task" not in params and "array_parallelism" not in params
    assert params["time"] == 90 and params["gpus_per_node"] == 1


@pytest.mark.parametrize("text,minutes", [("90", 90), ("90:30", 91), ("2:00:00", 120), ("1-0", 1440),
                                          ("1-2:30", 1590), ("1-2:30:01", 1591), ("0:59", 1), (45, 45)])
def test_slurm_time_forms(text, minutes):
    assert slurm_minutes(text) == minutes


def one_line_error(capsys, argv, needle):
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert needle in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


@pytest.mark.parametrize("extra,needle", [
    (["--executor", "slurm", "--slurm-time", "2h"], "--slurm-time '2h': not a Slurm time limit"),
    (["--executor", "slurm", "--slurm-time", "0"], "--slurm-time '0': a job needs a time limit of at least one minute"),
    (["--executor", "slurm", "--gpus-per-point", "-1"], "--gpus-per-point '-1': must be a whole number of 0 or more"),
    (["--executor", "slurm", "--cpus-per-point", "0"], "--cpus-per-point '0': must be a whole number of 1 or more"),
    (["--executor", "slurm", "--cpus-per-point", "four"], "--cpus-per-point 'four': must be a whole number"),
    (["--executor", "slurm", "--slurm-partition", "gpu long"], "--slurm-partition 'gpu long': not a partition name"),
    (["--executor", "pbs"], "--executor 'pbs': must be one of local, slurm"),
    (["--slurm-partition", "gpu"], "--slurm-partition: an option of --executor slurm"),
    (["--executor", "slurm", "--devices", "cuda:0"], "--devices: each job of the cluster uses the GPUs it asks for"),
    (["--executor", "slurm"], "--executor slurm: srun is not on this machine's PATH"),
])
def test_bad_cluster_options_are_one_line(extra, needle, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "no-srun"))
    out = tmp_path / "sweep"
    one_line_error(capsys, ["ablate", REPO / "data" / "grids" / "fn_ratio.yaml", "--out", out, *extra], needle)
    assert not (out / "grid.json").exists() and not (out / "points").exists()  # refused before any point


def test_a_point_job_calls_its_run_and_can_be_requeued():
    job = PointJob(lambda a, b=0: a + b)
    assert job(1, b=2) == 3
    again = job.checkpoint(1, b=2)  # what submitit requeues when Slurm stops the job: the same call
    assert again.function is job and again.args == (1,) and again.kwargs == {"b": 2}
