"""The GPU benchmark suite in one call: every figure the targets need, at the published configuration
(ResNet-18 both streams, 224 px images, 257 x 200 spectrograms, B = 128), on one NVIDIA GPU in under 8 minutes.

Steps, in this order (measurements in :mod:`gpu_suite_steps`):

- ``environment``: GPU, driver, CUDA, cuDNN, torch and library versions; missing modules
- ``train_published_fp32``: the published-style fp32 eager step (:class:`train_step.PublishedStep`)
- ``train_project_fp32``, ``train_project_bf16``, ``train_project_bf16_channels_last``: the project's step
  (:class:`train_step.ProjectStep`), bf16 autocast and channels_last added one by one
- ``fnac_terms``: similarity + the four FNAC terms, forward and backward, against the step
- ``evaluation``: the batched evaluator against the per-sample one on 5,158 maps
- ``loader``: samples/s from the cache at 0 / 4 / 8 workers, against what the fastest step consumes
- ``train_project_compile``: the last variant plus ``torch.compile``
- ``cuda_tests``: ``pytest -m cuda``

Each step runs in a process of its own (a fresh interpreter; with ``--isolation fork``, the default of a dry
run, a fork of this process, which saves the imports) under its own time limit, which the suite's total limit
caps; a step that fails or runs out of time is recorded with its error and the suite goes on. One JSON per run
goes to ``--out`` (or ``$GPU_SUITE_OUT``; default ``benchmarks/results/``, and a temporary folder for
``--dry-run``), with a log of every step's output beside it; a short table is printed last. ``--dry-run``
runs every step at toy sizes on the CPU in well under a minute. ``GPU_SUITE_FAIL=step[,step]`` makes those
steps fail on purpose (to check the error path).

    bash benchmarks/gpu_suite.sh [--out DIR] [--wheels DIR] [--steps a,b] [--budget STEP=SECONDS]
    bash benchmarks/gpu_suite.sh --dry-run [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
FAIL_ENV, OUT_ENV = "GPU_SUITE_FAIL", "GPU_SUITE_OUT"

#: Settings at the published configuration (a GPU run).
PUBLISHED = dict(batch=128, image_size=224, spec=[257, 200], model={}, warmup=3, steps=10, repeats=5,
                 compile_backend="inductor", terms_repeats=20, eval_n=5158, eval_batch=512, eval_repeats=3,
                 loader_workers=[0, 4, 8], loader_clips=512, loader_batches=24, loader_rounds=3, total_budget_s=450)
#: Toy settings of ``--dry-run`` on a CPU: ResNet-18 cut after its second stage, tiny batches, few maps; the
#: compiled variant captures graphs (forward and backward) without generating code.
DRY_RUN = dict(batch=4, image_size=32, spec=[32, 24], model=dict(visual_stage=2, audio_stage=2, embed_dim=32),
               warmup=1, steps=2, repeats=3, compile_backend="aot_eager", terms_repeats=3, eval_n=64, eval_batch=32,
               eval_repeats=3, loader_workers=[0, 2], loader_clips=16, loader_batches=8, loader_rounds=2,
               total_budget_s=150)
#: Time limit of each step in seconds (a GPU run; a dry run gives each step DRY_RUN_BUDGET_S).
BUDGETS = {"environment": 60, "train_published_fp32": 90, "train_project_fp32": 90, "train_project_bf16": 90,
           "train_project_bf16_channels_last": 90, "fnac_terms": 60, "evaluation": 120, "loader": 120,
           "train_project_compile": 240, "cuda_tests": 240}
DRY_RUN_BUDGET_S = 60
#: A step is not started with less than this left of the total limit.
MIN_STEP_S = 5.0
#: Targets: (key, figure in the summary, comparison, threshold, what it says).
TARGETS = [("fastest_step_vs_published", "speedup_vs_published", ">=", 3.0,
            "fastest project step vs the published fp32 eager step"),
           ("fnac_terms_share", "fnac_terms_share", "<", 0.03, "FNAC terms' share of the fastest step"),
           ("evaluation_vs_per_sample", "evaluation_speedup", ">=", 50.0,
            "batched evaluator vs the per-sample evaluator"),
           ("data_path_busy", "data_path_busy", ">=", 0.90,
            "share of the fastest step's demand the best loader covers")]


def step_names() -> list[str]:
    """The suite's steps in the order they run."""
    import gpu_suite_steps

    return list(gpu_suite_steps.STEPS)


def chosen_steps(steps: str | None) -> list[str]:
    """The steps of ``--steps a,b`` (all when not given), with ``environment`` first whether named or not: the
    report's machine, its file name and the exit status for a machine without CUDA all come from it."""
    names = steps.split(",") if steps else step_names()
    return ["environment", *(n for n in names if n != "environment")]


# -- one step in its own process ----------------------------------------------------------------------------


def child(name: str, settings: dict, result_path: Path) -> int:
    """Run step ``name`` in this (child) process and write ``{"figures": ...}`` or ``{"error": ...}``."""
    try:
        forced = [s for s in os.environ.get(FAIL_ENV, "").split(",") if s]
        if name in forced:
            raise RuntimeError(f"failure forced by {FAIL_ENV}={','.join(forced)}")
        import gpu_suite_steps

        payload = {"figures": gpu_suite_steps.STEPS[name](settings)}
        code = 0
    except BaseException as exc:  # recorded, never raised: the suite goes on
        traceback.print_exc()
        payload, code = {"error": f"{type(exc).__name__}: {exc}"}, 1
    partial = result_path.with_suffix(".partial")
    partial.write_text(json.dumps(finite(payload)))
    os.replace(partial, result_path)  # whole or absent, even if the process is killed now
    sys.stdout.flush()
    sys.stderr.flush()
    return code


def start_forked(name: str, settings: dict, *, log_path: Path, result_path: Path) -> int:
    """Fork a child in a session of its own, its output into ``log_path``, running ``name``; its pid."""
    sys.stdout.flush()
    sys.stderr.flush()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the parent's idle library threads: harmless here
        pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        os.setsid()
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        code = child(name, settings, result_path)
    finally:
        os._exit(code)


def start_spawned(name: str, settings_path: Path, *, log_path: Path, result_path: Path) -> int:
    """Start a fresh interpreter in a session of its own, running ``name``; its pid."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, __file__, "--child", name, "--settings", str(settings_path),
                                 "--result", str(result_path)], stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    proc.returncode = 0  # reaped below by pid; keeps Popen from reporting a process it no longer owns
    return proc.pid


def kill_group(pid: int) -> None:
    """SIGKILL the process group the step's child leads (the child and whatever it started)."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def wait_or_kill(pid: int, *, limit_s: float) -> int | None:
    """The child's exit code, or None when it ran past ``limit_s`` and was killed. Its process group is killed
    in both cases, while the child is not yet reaped (so the group id cannot have been reused)."""
    end = time.monotonic() + limit_s
    try:
        while True:
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                kill_group(pid)
                return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
            if time.monotonic() >= end:
                break
            time.sleep(0.05)
    except BaseException:  # Ctrl-C: the step's processes (in a session of their own) go too
        kill_group(pid)
        os.waitpid(pid, 0)
        raise
    kill_group(pid)
    os.waitpid(pid, 0)
    return None


def tail(path: Path, chars: int = 2000) -> str:
    """The last ``chars`` characters of a log file ('' when there is none)."""
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def run_step(name: str, settings: dict, *, budget_s: float, deadline: float, workdir: Path,
             isolation: str) -> dict:
    """One step under ``min(budget_s, time left)``: its status, figures or error, wall time and budget."""
    left = deadline - time.monotonic()
    if left < MIN_STEP_S:
        return {"status": "skipped", "budget_s": budget_s, "wall_s": 0.0, "figures": None,
                "error": f"not started: {max(left, 0):.0f} s left of the suite's {settings['total_budget_s']} s"}
    limit = min(budget_s, left)
    log_path, result_path = workdir / f"{name}.log", workdir / f"{name}.result.json"
    t0 = time.monotonic()
    if isolation == "fork":
        pid = start_forked(name, settings, log_path=log_path, result_path=result_path)
    else:
        pid = start_spawned(name, workdir / "settings.json", log_path=log_path, result_path=result_path)
    code = wait_or_kill(pid, limit_s=limit)
    record = {"status": "failed", "budget_s": round(limit, 1), "wall_s": round(time.monotonic() - t0, 2),
              "figures": None, "error": None}
    result = json.loads(result_path.read_text()) if result_path.is_file() else {}
    if code is None:
        record.update(status="timeout", error=f"stopped after its time limit of {limit:.1f} s")
    elif "figures" in result and code == 0:
        record.update(status="ok", figures=result["figures"])
    else:
        record["error"] = result.get("error") or f"exited with code {code} and no result"
    if record["status"] != "ok":
        record["log_tail"] = tail(log_path)
    return record


# -- the run -------------------------------------------------------------------------------------------------


def finite(obj):
    """``obj`` with every non-finite float replaced by None (strict JSON)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def git_commit() -> str | None:
    """The checkout's commit (with ``+changes`` when the tree differs from it), or None outside a git checkout."""
    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=20)
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")


def install_wheels(folder: Path, site: Path) -> list[str]:
    """Install every wheel of ``folder`` into ``site`` (no index, no dependencies) and put it first on the path
    of this process and its children; the wheels' names."""
    wheels = sorted(folder.glob("*.whl"))
    if not wheels:
        raise SystemExit(f"--wheels {folder}: no .whl file there")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                    "--upgrade", "--target", str(site), *map(str, wheels)], check=True)
    sys.path.insert(0, str(site))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    return [w.name for w in wheels]


def preload() -> None:
    """Import what the steps import, once, before forking them (none of it touches the GPU)."""
    for module in ("torch", "fnac_lab.train", "fnac_lab.data.cache", "train_step", "evaluate", "data_pipeline"):
        try:
            __import__(module)
        except Exception:  # the step that needs it records the error
            pass
    if "torch" in sys.modules and sys.modules["torch"].cuda.is_initialized():
        raise SystemExit("CUDA was initialised before forking the steps; use --isolation spawn")


def run_steps(names: list[str], settings: dict, *, budgets: dict, dry_run: bool, workdir: Path,
              isolation: str) -> dict:
    """Every requested step in turn, each under its budget (unknown names recorded as failed), printing a line
    per step."""
    known = step_names()
    deadline = time.monotonic() + settings["total_budget_s"]
    steps: dict[str, dict] = {}
    for k, name in enumerate(names, 1):
        if name not in known:
            steps[name] = {"status": "failed", "budget_s": 0, "wall_s": 0.0, "figures": None,
                           "error": f"unknown step {name!r} (steps: {', '.join(known)})"}
        elif not dry_run and name != "environment" and no_gpu(steps):
            steps[name] = {"status": "skipped", "budget_s": 0, "wall_s": 0.0, "figures": None,
                           "error": "no CUDA device (a CPU run is --dry-run)"}
        else:
            steps[name] = run_step(name, settings, budget_s=budgets[name], deadline=deadline, workdir=workdir,
                                   isolation=isolation)
        record = steps[name]
        error = f": {record['error'].splitlines()[0][:120]}" if record["error"] else ""
        print(f"[{k}/{len(names)}] {name}: {record['status']} ({record['wall_s']:.1f} s){error}", flush=True)
    return steps


def no_gpu(steps: dict) -> bool:
    """Whether the environment step ran and found no CUDA device."""
    env = steps.get("environment", {})
    return env.get("status") == "ok" and not env["figures"].get("gpu")


# -- figures, targets, report --------------------------------------------------------------------------------


def figure(steps: dict, name: str, key: str):
    """A figure of a step that succeeded, else None."""
    record = steps.get(name)
    if not record or record["status"] != "ok":
        return None
    return record["figures"].get(key)


def ratio(a, b):
    """``a / b`` when both are known and ``b`` is positive, else None."""
    return a / b if a is not None and b else None


def summarise(steps: dict, settings: dict) -> dict:
    """The ratios the targets read, each computed from the steps' recorded medians."""
    import gpu_suite_steps

    published = figure(steps, "train_published_fp32", "median_step_s")
    project = {name: figure(steps, name, "median_step_s") for name in gpu_suite_steps.TRAIN_VARIANTS
               if name != "train_published_fp32"}
    project = {k: v for k, v in project.items() if v is not None}
    fastest = min(project, key=project.get) if project else None
    fastest_s = project.get(fastest)
    demand = ratio(settings["batch"], fastest_s)
    loader = (figure(steps, "loader", "workers") or {})
    rates = {w: v["median_samples_per_s"] for w, v in loader.items()}
    best = max(rates, key=rates.get) if rates else None
    coverage = {w: ratio(r, demand) for w, r in rates.items()}
    return {"published_step_s": published, "fastest_step": fastest, "fastest_step_s": fastest_s,
            "speedup_vs_published": ratio(published, fastest_s),
            "speedups_vs_published": {k: ratio(published, v) for k, v in project.items()},
            "fnac_terms_share": ratio(figure(steps, "fnac_terms", "project_s"), fastest_s),
            "published_terms_share": ratio(figure(steps, "fnac_terms", "published_style_s"), published),
            "evaluation_speedup": ratio(figure(steps, "evaluation", "published_median_s"),
                                        figure(steps, "evaluation", "project_median_s")),
            "step_demand_samples_per_s": demand, "loader_best_workers": best,
            "loader_best_samples_per_s": rates.get(best), "loader_coverage": coverage,
            "data_path_busy": min(1.0, coverage[best]) if best is not None and coverage[best] is not None else None}


def judge(summary: dict) -> dict:
    """Each target: its value, threshold and whether it is met (None: not measured)."""
    out = {}
    for key, field, op, threshold, text in TARGETS:
        value = summary.get(field)
        met = None if value is None else (value >= threshold if op == ">=" else value < threshold)
        out[key] = {"what": text, "value": value, "target": f"{op} {threshold:g}", "met": met}
    return out


def slug(text: str | None) -> str:
    """A file-name-safe lower-case form of ``text`` ('cpu' for None)."""
    return re.sub(r"[^a-z0-9]+", "-", (text or "cpu").lower()).strip("-") or "cpu"


def write_report(report: dict, out_dir: Path, workdir: Path, names: list[str]) -> Path:
    """The run's JSON under ``out_dir`` (never overwriting one) and, beside it, every step's log."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = re.sub(r"[-:]", "", report["started"][:19]).replace("T", "-")  # 20250131-142501 (UTC)
    stem = f"{'dry-run' if report['dry_run'] else 'gpu'}-{stamp}-{slug(report['machine'].get('gpu'))}"
    path, k = out_dir / f"{stem}.json", 1
    while path.exists():
        k += 1
        path = out_dir / f"{stem}-{k}.json"
    path.write_text(json.dumps(finite(report), indent=2, allow_nan=False) + "\n")
    with open(path.with_suffix(".log"), "w") as log:
        for name in names:
            log.write(f"===== {name}\n{tail(workdir / f'{name}.log', chars=10**7)}\n")
    return path


# -- the table -----------------------------------------------------------------------------------------------


def describe(name: str, record: dict) -> str:
    """The step's main figures in a few words."""
    f = record["figures"]
    if record["status"] != "ok":
        return (record["error"] or "").splitlines()[0][:90]
    if name == "environment":
        return f"{f['gpu'] or 'no GPU'}; driver {f['driver']}; CUDA {f['cuda']}; torch {f['torch']}"
    if name.startswith("train_"):
        return f"{1000 * f['median_step_s']:.2f} ms / step, {f['samples_per_s']:.0f} samples/s"
    if name == "fnac_terms":
        return f"{1000 * f['project_s']:.3f} ms (published-style {1000 * f['published_style_s']:.3f} ms)"
    if name == "evaluation":
        return (f"{f['n']} maps: per sample {f['published_median_s']:.3f} s, batched {f['project_median_s']:.4f} s")
    if name == "loader":
        return ", ".join(f"{w} workers {v['median_samples_per_s']:.0f}/s" for w, v in f["workers"].items())
    if name == "cuda_tests":
        return f["summary"]
    return ""


def print_table(report: dict, path: Path) -> None:
    """The short table: each step, then each target."""
    if report["dry_run"]:
        print("\nDRY RUN: toy sizes on the CPU; these figures say nothing about the targets.")
    m = report["machine"]
    print(f"\nmachine: {m.get('gpu') or 'no GPU'}, driver {m.get('driver')}, CUDA {m.get('cuda')}, "
          f"torch {m.get('torch')}; {m.get('cpu')}, {m.get('cores')} cores")
    print("\n| step | status | s | figures |\n| --- | --- | ---: | --- |")
    for name, record in report["steps"].items():
        print(f"| {name} | {record['status']} | {record['wall_s']:.1f} | {describe(name, record)} |")
    s = report["summary"]
    for name, x in s["speedups_vs_published"].items():
        print(f"{name}: {x:.2f}x the published fp32 step" if x is not None else f"{name}: not measured")
    print("\n| target | value | goal | |\n| --- | ---: | --- | --- |")
    for t in report["targets"].values():
        value = "not measured" if t["value"] is None else f"{t['value']:.4g}"
        verdict = {True: "met", False: "missed", None: "not measured"}[t["met"]]
        print(f"| {t['what']} | {value} | {t['target']} | {verdict} |")
    print(f"\nresults: {path} (log: {path.with_suffix('.log').name}); {report['wall_s']:.0f} s in all")


# -- command line --------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The suite's options (and the hidden ones a spawned step is started with)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="every step at toy sizes on the CPU")
    parser.add_argument("--out", default=None, help=f"folder for the JSON and log (default: ${OUT_ENV}, else "
                        "benchmarks/results, or a temporary folder for --dry-run)")
    parser.add_argument("--steps", default=None,
                        help="comma-separated steps to run (default: all; environment always runs first)")
    parser.add_argument("--wheels", default=None, help="install the wheels of this folder first (no index)")
    parser.add_argument("--isolation", choices=("auto", "fork", "spawn"), default="auto",
                        help="how each step gets its own process: a fresh interpreter (spawn) or a fork of the "
                             "driver (default: spawn on a GPU run, fork for --dry-run)")
    parser.add_argument("--budget", action="append", default=[], metavar="STEP=SECONDS",
                        help="another time limit for one step (repeatable)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--settings", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--result", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def out_folder(args: argparse.Namespace, *, gpu_run: bool) -> Path:
    """Where the run's files go: --out, else $GPU_SUITE_OUT, else benchmarks/results for a run that found a GPU
    and a temporary folder for a dry run (or a run without a GPU)."""
    chosen = args.out or os.environ.get(OUT_ENV)
    if chosen:
        return Path(chosen)
    return RESULTS if gpu_run else Path(tempfile.gettempdir()) / "fnac-gpu-suite"


def step_budgets(args: argparse.Namespace) -> dict[str, float]:
    """Each step's time limit: the defaults of a GPU or dry run, with ``--budget STEP=SECONDS`` applied."""
    budgets = {name: float(DRY_RUN_BUDGET_S if args.dry_run else s) for name, s in BUDGETS.items()}
    for item in args.budget:
        name, _, seconds = item.partition("=")
        if name not in budgets or not re.fullmatch(r"\d+(\.\d*)?", seconds):
            raise SystemExit(f"--budget {item}: expected STEP=SECONDS with STEP one of {', '.join(budgets)}")
        budgets[name] = float(seconds)
    return budgets


def ensure_paths() -> None:
    """The repository root and this folder on the import path, here and in every process started from here."""
    for folder in (str(HERE), str(REPO)):
        if folder not in sys.path:
            sys.path.insert(0, folder)
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    os.environ["PYTHONPATH"] = os.pathsep.join([*(p for p in (str(REPO), str(HERE)) if p not in paths), *paths])


def run_suite(args: argparse.Namespace) -> int:
    """Run the steps, write the report, print the table; 0 when every step succeeded, else 1 (2 without a GPU)."""
    t0 = time.monotonic()
    ensure_paths()
    if args.isolation == "auto":
        args.isolation = "fork" if args.dry_run else "spawn"
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    settings = dict(DRY_RUN if args.dry_run else PUBLISHED)
    budgets = step_budgets(args)
    names = chosen_steps(args.steps)
    with tempfile.TemporaryDirectory(prefix="fnac-gpu-suite-") as tmp:
        workdir = Path(tmp)
        (workdir / "settings.json").write_text(json.dumps(settings))
        settings["wheels"] = install_wheels(Path(args.wheels), workdir / "site") if args.wheels else []
        if args.isolation == "fork":
            preload()
        steps = run_steps(names, settings, budgets=budgets, dry_run=args.dry_run, workdir=workdir,
                          isolation=args.isolation)
        summary = summarise(steps, settings)
        env = steps.get("environment", {}).get("figures") or {}
        report = {"suite": "fnac_lab GPU suite", "dry_run": args.dry_run, "started": started,
                  "wall_s": time.monotonic() - t0, "commit": git_commit(), "isolation": args.isolation,
                  "machine": env, "settings": {**settings, "budgets_s": budgets},
                  "steps": steps, "summary": summary, "targets": judge(summary)}
        gpu_run = not args.dry_run and bool(env.get("gpu"))
        path = write_report(report, out_folder(args, gpu_run=gpu_run), workdir, names)
    print_table(report, path)
    if not args.dry_run and no_gpu(steps):
        return 2
    return 0 if all(r["status"] == "ok" for r in steps.values()) else 1


def main(argv: list[str] | None = None) -> int:
    """Run the suite, or one step when started as a spawned step's process."""
    args = parse_args(argv)
    if args.child:  # a step started with --isolation spawn
        return child(args.child, json.loads(Path(args.settings).read_text()), Path(args.result))
    return run_suite(args)


if __name__ == "__main__":
    sys.exit(main())
