"""The GPU suite's dry run (benchmarks/gpu_suite.sh --dry-run): every step runs at toy sizes on the CPU, one JSON
holds every figure, the ratios follow from the recorded medians, and a failing or slow step is recorded while
the others still run."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_suite.sh"
sys.path.insert(0, str(REPO / "benchmarks"))

import gpu_suite  # noqa: E402
import gpu_suite_steps  # noqa: E402


def run_suite(out: Path, *args: str, env: dict | None = None) -> tuple[subprocess.CompletedProcess, dict]:
    """Run the shell script's dry run into ``out``; the process and the one JSON it wrote."""
    environ = {k: v for k, v in os.environ.items() if k != gpu_suite.FAIL_ENV}
    environ.update({"PYTHON": sys.executable, "OMP_NUM_THREADS": "1", **(env or {})})
    proc = subprocess.run(["bash", str(SCRIPT), "--dry-run", "--out", str(out), *args], cwd=REPO, env=environ,
                          capture_output=True, text=True, timeout=400)
    files = sorted(out.glob("*.json"))
    assert len(files) == 1, (files, proc.stdout[-3000:], proc.stderr[-3000:])
    return proc, json.loads(files[0].read_text())


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, dict]:
    """One whole dry run, shared by the tests of this file."""
    return run_suite(tmp_path_factory.mktemp("gpu_suite"))


def positive(x) -> bool:
    """A positive number (not a bool, not None)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0


def test_every_step_and_budget_is_named_once():
    assert list(gpu_suite.BUDGETS) == gpu_suite.step_names() == list(gpu_suite_steps.STEPS)


def test_dry_run_exits_0_with_every_step_ok(dry_run):
    proc, report = dry_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert report["dry_run"] is True
    assert list(report["steps"]) == gpu_suite.step_names()
    bad = {name: r["error"] for name, r in report["steps"].items() if r["status"] != "ok"}
    assert not bad
    for key in ("torch", "cuda", "python", "cpu", "missing_modules"):
        assert key in report["machine"]
    assert report["settings"]["batch"] == gpu_suite.DRY_RUN["batch"]
    assert "DRY RUN" in proc.stdout and "| target |" in proc.stdout


def test_train_figures_are_positive_medians(dry_run):
    steps = dry_run[1]["steps"]
    for name in gpu_suite_steps.TRAIN_VARIANTS:
        f = steps[name]["figures"]
        assert len(f["step_s"]) == f["repeats"] and all(positive(t) for t in f["step_s"])
        assert f["median_step_s"] == pytest.approx(statistics.median(f["step_s"]), rel=1e-12)
        assert f["samples_per_s"] == pytest.approx(f["batch"] / f["median_step_s"], rel=1e-12)
        assert positive(f["first_step_s"]) and positive(f["warmup_s"])
    assert steps["train_project_compile"]["figures"]["compile"] is True
    assert steps["train_project_compile"]["figures"]["compile_backend"] == "aot_eager"


def test_other_figures_are_positive(dry_run):
    steps = dry_run[1]["steps"]
    terms = steps["fnac_terms"]["figures"]
    assert positive(terms["project_s"]) and positive(terms["published_style_s"]) and terms["published_terms_equal"]
    ev = steps["evaluation"]["figures"]
    assert ev["scores_identical"] and ev["n"] == gpu_suite.DRY_RUN["eval_n"]
    assert all(positive(t) for t in ev["published_s"] + ev["project_s"])
    loader = steps["loader"]["figures"]
    assert list(loader["workers"]) == [str(w) for w in gpu_suite.DRY_RUN["loader_workers"]]
    for w in loader["workers"].values():
        assert all(positive(r) for r in w["samples_per_s"])
        assert w["median_samples_per_s"] == pytest.approx(statistics.median(w["samples_per_s"]))
    tests = steps["cuda_tests"]["figures"]
    assert tests["exit_code"] == 0 and tests["skipped"] >= 2 and tests["failed"] == 0  # no CUDA here: they skip


def test_ratios_follow_from_the_recorded_medians(dry_run):
    report = dry_run[1]
    steps, s = report["steps"], report["summary"]
    median = {n: steps[n]["figures"]["median_step_s"] for n in gpu_suite_steps.TRAIN_VARIANTS}
    published = median.pop("train_published_fp32")
    fastest = min(median, key=median.get)
    assert s["fastest_step"] == fastest
    assert s["speedup_vs_published"] == pytest.approx(published / median[fastest], rel=1e-12)
    assert s["fnac_terms_share"] == pytest.approx(steps["fnac_terms"]["figures"]["project_s"] / median[fastest])
    ev = steps["evaluation"]["figures"]
    assert ev["published_median_s"] == pytest.approx(statistics.median(ev["published_s"]))
    assert s["evaluation_speedup"] == pytest.approx(ev["published_median_s"] / ev["project_median_s"], rel=1e-12)
    demand = report["settings"]["batch"] / median[fastest]
    best = max(w["median_samples_per_s"] for w in steps["loader"]["figures"]["workers"].values())
    assert s["step_demand_samples_per_s"] == pytest.approx(demand)
    assert s["data_path_busy"] == pytest.approx(min(1.0, best / demand))
    targets = report["targets"]
    assert targets["fastest_step_vs_published"]["met"] == (s["speedup_vs_published"] >= 3)
    assert targets["fnac_terms_share"]["met"] == (s["fnac_terms_share"] < 0.03)
    assert targets["evaluation_vs_per_sample"]["met"] == (s["evaluation_speedup"] >= 50)
    assert targets["data_path_busy"]["met"] == (s["data_path_busy"] >= 0.9)


def test_a_failing_step_is_recorded_and_the_others_run(tmp_path):
    proc, report = run_suite(tmp_path, "--isolation", "spawn", "--steps",
                             "fnac_terms,no_such_step,train_project_fp32,evaluation",
                             "--budget", "train_project_fp32=0.5", env={gpu_suite.FAIL_ENV: "fnac_terms"})
    assert proc.returncode == 1
    steps = report["steps"]
    assert list(steps) == ["environment", "fnac_terms", "no_such_step", "train_project_fp32", "evaluation"]
    assert steps["fnac_terms"]["status"] == "failed" and "forced" in steps["fnac_terms"]["error"]
    assert "RuntimeError" in steps["fnac_terms"]["log_tail"]
    assert steps["no_such_step"]["status"] == "failed" and "unknown step" in steps["no_such_step"]["error"]
    assert steps["train_project_fp32"]["status"] == "timeout" and steps["train_project_fp32"]["figures"] is None
    assert steps["environment"]["status"] == steps["evaluation"]["status"] == "ok"
    assert positive(report["summary"]["evaluation_speedup"])
    assert report["summary"]["speedup_vs_published"] is None
    assert report["targets"]["fastest_step_vs_published"]["met"] is None
    assert "not measured" in proc.stdout
