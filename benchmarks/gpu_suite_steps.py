"""The measurements of the GPU suite (:mod:`gpu_suite`), one function per step.

Each step takes the suite's settings (a dict, see :data:`gpu_suite.PUBLISHED`) and returns its figures as a
JSON-ready dict; it raises on failure. The steps reuse the benchmark scripts beside this file
(:mod:`train_step`, :mod:`evaluate`, :mod:`data_pipeline`) and time on the device: CUDA events around the
timed steps on a GPU (``torch.cuda.synchronize`` before a host clock where the reused code does so), the host
clock on a CPU. Warm-up iterations are never timed; figures are medians over repeats.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: Modules the steps import beyond the standard library (reported missing by the environment step).
REQUIRED_MODULES = ("torch", "torchvision", "torchaudio", "timm", "numpy", "scipy", "pandas", "soundfile", "PIL",
                    "yaml", "tqdm", "pytest")

#: The training-step variants: published-style, then the project's step with the fast paths added one by one.
TRAIN_VARIANTS = {
    "train_published_fp32": dict(label="published: fp32 eager, per-term similarity", published=True),
    "train_project_fp32": dict(label="project: fp32 eager", amp=False, channels_last=False, compile=False),
    "train_project_bf16": dict(label="project: + bf16 autocast", amp=True, channels_last=False, compile=False),
    "train_project_bf16_channels_last": dict(label="project: + bf16 autocast + channels_last", amp=True,
                                             channels_last=True, compile=False),
    "train_project_compile": dict(label="project: + bf16 autocast + channels_last + torch.compile", amp=True,
                                  channels_last=True, compile=True),
}


def suite_device():
    """The CUDA device when there is one, else the CPU."""
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def time_block(step, *, steps: int, device) -> float:
    """Seconds per step over ``steps`` consecutive calls of ``step``: CUDA events around them on a GPU (one
    synchronize before, one wait for the end event after), the host clock on a CPU."""
    import torch

    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(device)
        start.record()
        for _ in range(steps):
            step()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000.0 / steps
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t0) / steps


# -- environment ---------------------------------------------------------------------------------------------


def driver_version() -> str | None:
    """The NVIDIA driver's version from ``nvidia-smi``, else from /proc; None without either."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip().splitlines()[0].strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    try:
        match = re.search(r"Kernel Module\s+(\S+)", Path("/proc/driver/nvidia/version").read_text())
        return match.group(1) if match else None
    except OSError:
        return None


def module_version(name: str) -> str | None:
    """``name.__version__`` where the module imports, else None."""
    try:
        return getattr(__import__(name), "__version__", None)
    except Exception:  # a broken install is reported as missing, not raised
        return None


def step_environment(settings: dict) -> dict:
    """GPU, driver, CUDA, cuDNN, library versions, TF32 settings and the modules missing for the other steps."""
    import torch

    from machine import cpu_name

    info = {"gpu": None, "gpu_count": 0, "capability": None, "gpu_memory_gib": None, "multiprocessors": None,
            "driver": driver_version(), "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
            "python": platform.python_version(), "cpu": cpu_name(), "cores": os.cpu_count(),
            "tf32_cudnn": torch.backends.cudnn.allow_tf32, "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
            "cudnn_benchmark": torch.backends.cudnn.benchmark}
    for name in ("torch", "torchvision", "torchaudio", "timm", "numpy", "scipy", "pytest"):
        info[name] = module_version(name)
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_count=torch.cuda.device_count(), capability=f"{props.major}.{props.minor}",
                    gpu_memory_gib=round(props.total_memory / 2**30, 1), multiprocessors=props.multi_processor_count)
    info["missing_modules"] = [m for m in REQUIRED_MODULES if importlib.util.find_spec(m) is None]
    return info


# -- training step -------------------------------------------------------------------------------------------


def make_step(spec: dict, cfg, device, batch: dict, *, compile_backend: str):
    """The step object of one variant of :data:`TRAIN_VARIANTS` (from :mod:`train_step`)."""
    import train_step

    if spec.get("published"):
        return train_step.PublishedStep(cfg, device, batch)
    return train_step.ProjectStep(cfg.replace(channels_last=spec["channels_last"]), device, batch, amp=spec["amp"],
                                  compile_model=spec["compile"], compile_backend=compile_backend)


def step_train(settings: dict, *, variant: str) -> dict:
    """Median seconds per training step of one variant at the suite's size, warm-up steps excluded."""
    import train_step

    spec, device = TRAIN_VARIANTS[variant], suite_device()
    bins, frames = settings["spec"]
    cfg = train_step.bench_config(batch_size=settings["batch"], image_size=settings["image_size"],
                                  **settings["model"])
    batch = train_step.make_batch(batch_size=settings["batch"], image_size=settings["image_size"], bins=bins,
                                  frames=frames)
    step = make_step(spec, cfg, device, batch, compile_backend=settings["compile_backend"])
    t0 = time.perf_counter()
    first = time_block(step, steps=1, device=device)  # includes compilation, for the compiled variant
    for _ in range(settings["warmup"] - 1):
        step()
    train_step.sync(device)
    warmup_s = time.perf_counter() - t0
    times = [time_block(step, steps=settings["steps"], device=device) for _ in range(settings["repeats"])]
    median = statistics.median(times)
    return {"variant": spec["label"], "batch": settings["batch"], "image_size": settings["image_size"],
            "spec": [bins, frames], "amp": spec.get("amp", False), "channels_last": spec.get("channels_last", False),
            "compile": spec.get("compile", False),
            "compile_backend": settings["compile_backend"] if spec.get("compile") else None,
            "timer": "cuda events" if device.type == "cuda" else "host clock",
            "warmup_steps": settings["warmup"], "first_step_s": first, "warmup_s": warmup_s,
            "steps_per_repeat": settings["steps"], "repeats": settings["repeats"], "step_s": times,
            "median_step_s": median, "samples_per_s": settings["batch"] / median}


def step_fnac_terms(settings: dict) -> dict:
    """Seconds of the similarity tensor plus the four FNAC terms, forward and backward, on embeddings of the step's
    shape (the project's single similarity tensor and the published-style per-term one), after checking that
    both compute the same terms."""
    import train_step
    from fnac_lab.checkpoint import build_model

    device = suite_device()
    bins, frames = settings["spec"]
    cfg = train_step.bench_config(batch_size=settings["batch"], image_size=settings["image_size"],
                                  **settings["model"])
    train_step.check_terms_agree(cfg, device)
    batch = train_step.make_batch(batch_size=2, image_size=settings["image_size"], bins=bins, frames=frames)
    map_size = train_step.map_size_of(build_model(cfg).to(device).train(), batch, device)
    timed = partial(train_step.terms_seconds, cfg, device, batch_size=settings["batch"], map_size=map_size,
                    repeats=settings["terms_repeats"])
    return {"batch": settings["batch"], "embed_dim": cfg.embed_dim, "map_size": map_size,
            "repeats": settings["terms_repeats"], "timer": "synchronize + host clock", "published_terms_equal": True,
            "project_s": timed(published=False), "published_style_s": timed(published=True)}


# -- evaluation ----------------------------------------------------------------------------------------------


def step_evaluation(settings: dict) -> dict:
    """The batched evaluator against the per-sample one on the same maps (:func:`evaluate.compare_evaluators`,
    which asserts identical per-sample cIoUs and scores)."""
    import evaluate

    device, n = suite_device(), settings["eval_n"]
    result = evaluate.compare_evaluators(n=n, repeats=settings["eval_repeats"], batch=settings["eval_batch"],
                                         device=device)
    times = result["times"]
    published, project = statistics.median(times["published"]), statistics.median(times["project"])
    return {"n": n, "chunk": settings["eval_batch"], "repeats": settings["eval_repeats"], "boxes": result["source"],
            "timer": "synchronize + host clock", "scores_identical": True, "scores": result["summary"],
            "published_s": times["published"], "project_s": times["project"], "published_median_s": published,
            "project_median_s": project, "published_samples_per_s": n / published,
            "project_samples_per_s": n / project}


# -- loader --------------------------------------------------------------------------------------------------


def build_bench_cache(tmp: Path, *, clips: int) -> tuple[Path, float]:
    """Write ``clips`` synthetic 3 s clips (480 x 360 JPEG frames, 16 kHz wav) and their cache under ``tmp``;
    the cache's path and the seconds its writing took."""
    import data_pipeline
    from fnac_lab.data.cache import build_cache

    root, cache = tmp / "root", tmp / "cache"
    data_pipeline.make_layout(root, clips, seconds=3.0, rate=16000, size=(480, 360))
    t0 = time.perf_counter()
    build_cache(root, cache, workers=min(8, os.cpu_count() or 1), progress=False)
    return cache, time.perf_counter() - t0


def loader_rates(dataset, *, workers: int, batch_size: int, batches: int, rounds: int, device) -> list[float]:
    """Samples per second of the training loader (:func:`fnac_lab.train.train_loader`, persistent workers)
    reading ``batches`` random batches per round; the first round (worker start) is not timed."""
    import numpy as np

    import train_step
    from fnac_lab.train import train_loader

    rng = np.random.default_rng(workers)
    plan = [rng.choice(len(dataset), size=batch_size, replace=False).tolist() for _ in range(batches)]
    cfg = train_step.bench_config(batch_size=batch_size, image_size=224).replace(
        num_workers=workers, persistent_workers=workers > 0)
    loader = train_loader(dataset, plan, cfg, device)
    rates = []
    for r in range(rounds + 1):
        t0 = time.perf_counter()
        for _ in loader:
            pass
        if r:
            rates.append(batches * batch_size / (time.perf_counter() - t0))
    del loader
    return rates


def step_loader(settings: dict) -> dict:
    """Loader throughput from a cache at each worker count of the settings (uint8 frames, pinned on CUDA)."""
    from fnac_lab.data.cache import CachedAVDataset

    device = suite_device()
    figures = {"clips": settings["loader_clips"], "batch": settings["batch"], "batches_per_round":
               settings["loader_batches"], "rounds": settings["loader_rounds"], "pin_memory": device.type == "cuda",
               "timer": "host clock", "workers": {}}
    with tempfile.TemporaryDirectory() as tmp:
        cache, figures["cache_build_s"] = build_bench_cache(Path(tmp), clips=settings["loader_clips"])
        dataset = CachedAVDataset(cache, split="train", audio_augment=False)  # as training reads it
        figures["spec_shape"] = dataset.meta["spec_shape"]
        for workers in settings["loader_workers"]:
            rates = loader_rates(dataset, workers=workers, batch_size=settings["batch"],
                                 batches=settings["loader_batches"], rounds=settings["loader_rounds"], device=device)
            figures["workers"][str(workers)] = {"samples_per_s": rates,
                                                "median_samples_per_s": statistics.median(rates)}
    return figures


# -- CUDA tests ----------------------------------------------------------------------------------------------


def cuda_test_files() -> list[str]:
    """The test files holding a test marked ``cuda`` (only they are collected: the others need more packages)."""
    return sorted(str(p.relative_to(REPO)) for p in (REPO / "tests").glob("test_*.py")
                  if "pytest.mark.cuda" in p.read_text(encoding="utf-8"))


class Outcomes:
    """A pytest plugin keeping the number of tests of each outcome."""

    KINDS = {"passed": "passed", "failed": "failed", "skipped": "skipped", "error": "errors",
             "deselected": "deselected"}

    def __init__(self):
        self.counts = {name: 0 for name in self.KINDS.values()}

    def pytest_terminal_summary(self, terminalreporter) -> None:
        """Read the counts off the terminal reporter at the end of the run."""
        for kind, name in self.KINDS.items():
            self.counts[name] = len(terminalreporter.stats.get(kind, []))


def step_cuda_tests(settings: dict) -> dict:
    """``pytest -m cuda`` (in this process) over the files that hold such tests; on a GPU every one must pass,
    none skip."""
    import pytest

    files = cuda_test_files()
    if not files:
        raise RuntimeError("no test file holds a test marked cuda")
    args = ["-m", "cuda", "-q", "-p", "no:cacheprovider", f"--rootdir={REPO}", *(str(REPO / f) for f in files)]
    outcomes = Outcomes()
    code = int(pytest.main(args, plugins=[outcomes]))
    sys.stdout.flush()
    counts = outcomes.counts
    summary = ", ".join(f"{n} {name}" for name, n in counts.items() if n) or "no tests"
    figures = {"command": f"pytest -m cuda {' '.join(files)}", "files": files, "exit_code": code, **counts,
               "summary": summary}
    if code != 0:
        raise RuntimeError(f"pytest exited with {code}: {summary}")
    if suite_device().type == "cuda" and (counts["skipped"] or not counts["passed"]):
        raise RuntimeError(f"CUDA tests did not all run on a CUDA machine: {summary}")
    return figures


#: Every step of the suite, in the order it runs them.
STEPS = {"environment": step_environment,
         **{name: partial(step_train, variant=name) for name in TRAIN_VARIANTS if name != "train_project_compile"},
         "fnac_terms": step_fnac_terms, "evaluation": step_evaluation, "loader": step_loader,
         "train_project_compile": partial(step_train, variant="train_project_compile"),
         "cuda_tests": step_cuda_tests}
