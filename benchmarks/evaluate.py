"""Scoring throughput on a VGG-SS-sized test set: this project's batched evaluator against a per-sample
numpy evaluator written the published way, on the same maps, asserting identical scores.

The input is what a model hands the evaluator: one 7 x 7 own-pair similarity map per sample, and the
sample's normalised boxes (VGG-SS's own boxes from ``vggss.json`` when the reference data is beside the
repository, else synthetic boxes of the same kind), 5,158 samples by default.

- ``published``: per sample, upsample the map to 224 x 224 (bicubic, on the device, batch of one), copy it
  to the host, min-max normalise, take the threshold from ``np.sort``, draw the ground-truth map from the
  boxes, compute cIoU; then AP50, mean cIoU and AUC over the list.
- ``project``: chunks of ``--batch`` maps and their boxes go to the device, where
  :func:`fnac_lab.models.upsample_maps`, :func:`fnac_lab.metrics.gt_maps_from_boxes` and
  :func:`fnac_lab.metrics.ciou` (normalisation, median threshold with ties, cIoU) run batched; the host waits
  once, for the cIoU vector, and :func:`fnac_lab.metrics.summarise` finishes.

Every per-sample cIoU and every summary score must be equal (exactly) before any figure is printed. The
figure is the median over ``--repeats`` of samples per second.

    python benchmarks/evaluate.py [--n 5158] [--repeats 3] [--batch 512] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fnac_lab import metrics
from fnac_lab.models import upsample_maps

from machine import describe_machine

VGGSS_JSON = Path(__file__).resolve().parents[2] / "shared" / "reference-data" / "vggss.json"


def load_boxes(n: int, seed: int = 0) -> tuple[list[list[list[float]]], str]:
    """``n`` samples' normalised boxes: VGG-SS's own (cycled) when available, else synthetic ones."""
    if VGGSS_JSON.is_file():
        boxes = [entry["bbox"] for entry in json.loads(VGGSS_JSON.read_text())]
        return [boxes[i % len(boxes)] for i in range(n)], f"VGG-SS boxes from {VGGSS_JSON.name}"
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        k = int(rng.integers(1, 4))
        lo = rng.uniform(0, 0.6, size=(k, 2))
        hi = lo + rng.uniform(0.1, 0.4, size=(k, 2))
        out.append([[float(a), float(b), float(c), float(d)] for (a, b), (c, d) in zip(lo, hi)])
    return out, "synthetic boxes (vggss.json not found)"


def padded(boxes: list[list[list[float]]]) -> torch.Tensor:
    """Normalised boxes as a float64 tensor ``[N, K, 4]``, all-zero rows as padding."""
    k = max(len(b) for b in boxes)
    out = torch.zeros(len(boxes), k, 4, dtype=torch.float64)
    for i, b in enumerate(boxes):
        out[i, : len(b)] = torch.tensor(b, dtype=torch.float64)
    return out


# -- the published way: one sample at a time, numpy ---------------------------------------------------------


def published_gt(boxes: list[list[float]], size: int = 224) -> np.ndarray:
    gt = np.zeros((size, size))
    for box in boxes:
        x0, y0, x1, y1 = (int(np.clip(v, 0, 1) * size) for v in box)
        gt[y0:y1, x0:x1] = 1
    return gt


def published_ciou(heatmap: np.ndarray, gt: np.ndarray) -> float:
    if heatmap.max() != heatmap.min():
        heatmap = (heatmap - heatmap.min()) / (heatmap.max() - heatmap.min())
    threshold = np.sort(heatmap.flatten())[int(heatmap.shape[0] * heatmap.shape[1] / 2)]
    region = np.zeros_like(heatmap)
    region[heatmap >= threshold] = 1
    return float(np.sum(region * gt) / (np.sum(gt) + np.sum(region * (gt == 0))))


def published_summary(cious: list[float]) -> dict[str, float]:
    values = np.array(cious)
    thresholds = [0.05 * i for i in range(21)]
    curve = [np.sum(values >= t) / len(values) for t in thresholds]
    return {"ap50": float(np.sum(values >= 0.5) / len(values)), "mean_ciou": float(values.mean()),
            "auc": float(np.trapezoid(curve, thresholds))}


def published_evaluate(low: torch.Tensor, boxes: list, device: torch.device) -> tuple[list[float], dict]:
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)  # its fastest setting on a CPU: one small map at a time gains nothing from threads
    try:
        cious = []
        for i in range(low.shape[0]):
            small = low[i : i + 1, None].to(device)
            heatmap = F.interpolate(small, size=(224, 224), mode="bicubic", align_corners=False)
            heatmap = heatmap[0, 0].cpu().numpy()
            cious.append(published_ciou(heatmap, published_gt(boxes[i])))
    finally:
        torch.set_num_threads(threads)
    return cious, published_summary(cious)


# -- this project: batched on the device --------------------------------------------------------------------


def project_evaluate(low: torch.Tensor, boxes: torch.Tensor, device: torch.device,
                     batch: int) -> tuple[torch.Tensor, dict]:
    cious = []
    for start in range(0, low.shape[0], batch):
        maps = upsample_maps(low[start : start + batch].to(device, non_blocking=True))
        pixels = metrics.vggss_boxes_to_pixels(boxes[start : start + batch].to(device, non_blocking=True))
        gt = metrics.gt_maps_from_boxes(pixels)
        cious.append(metrics.ciou(maps, gt, check_finite=False))
    values = torch.cat(cious).cpu()  # the one wait for the device
    return values, metrics.summarise(values)


def timed(fn, device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0, out


def compare_evaluators(*, n: int, repeats: int, batch: int, device: torch.device) -> dict:
    """Both evaluators on the same ``n`` random 7 x 7 maps, taking turns ``repeats`` times, after one warm-up
    chunk of the batched one. Raises AssertionError unless every per-sample cIoU and every summary score is
    equal on every repeat. Returns the seconds of each repeat per evaluator (``times``), the scores
    (``summary``) and where the boxes came from (``source``)."""
    boxes, source = load_boxes(n)
    box_tensor = padded(boxes)
    low = torch.randn(n, 7, 7, generator=torch.Generator().manual_seed(0))
    if device.type == "cuda":
        low, box_tensor = low.pin_memory(), box_tensor.pin_memory()

    project_evaluate(low[:batch], box_tensor[:batch], device, batch)  # warm-up
    times: dict[str, list[float]] = {"published": [], "project": []}
    for _ in range(repeats):
        t, (theirs, their_summary) = timed(lambda: published_evaluate(low, boxes, device), device)
        times["published"].append(t)
        t, (ours, our_summary) = timed(lambda: project_evaluate(low, box_tensor, device, batch), device)
        times["project"].append(t)
        assert ours.tolist() == theirs, "per-sample cIoUs differ"
        assert our_summary == their_summary, (our_summary, their_summary)
    return {"times": times, "summary": our_summary, "source": source}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=5158, help="samples (VGG-SS test: 5,158)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=512, help="maps per device batch (project path)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    result = compare_evaluators(n=args.n, repeats=args.repeats, batch=args.batch, device=device)
    times, our_summary, source = result["times"], result["summary"], result["source"]

    rate = {k: args.n / statistics.median(v) for k, v in times.items()}
    print(f"machine: {describe_machine(device)}")
    print(f"{args.n} maps (7 x 7 upsampled to 224 x 224), {source}; {args.repeats} repeats (median); "
          f"project batch {args.batch}")
    print(f"scores identical on every repeat: AP50 {our_summary['ap50']:.4f}, mean cIoU "
          f"{our_summary['mean_ciou']:.4f}, AUC {our_summary['auc']:.4f}; all {args.n} per-sample cIoUs equal")
    print(f"\n| evaluator | samples/s | seconds for {args.n} | vs published |\n| --- | ---: | ---: | ---: |")
    for name, label in (("published", "published: per sample, numpy sort"),
                        ("project", f"project: batched on {device.type}")):
        print(f"| {label} | {rate[name]:.0f} | {args.n / rate[name]:.2f} | {rate[name] / rate['published']:.1f}x |")


if __name__ == "__main__":
    main()
