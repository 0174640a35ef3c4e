"""One line describing the machine a benchmark ran on (shared by the benchmark scripts)."""

from __future__ import annotations

import os
import platform

import torch


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo where there is one, else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as fh:
            return next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def describe_machine(device: torch.device | None = None) -> str:
    """CPU, cores, torch version and threads, the GPU when ``device`` is one, and the load at start."""
    text = f"{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"
    if device is not None and device.type == "cuda":
        text = f"{torch.cuda.get_device_name(device)}; host: {text}"
    if hasattr(os, "getloadavg"):
        text += f", load average {os.getloadavg()[0]:.1f} at start"
    return text
