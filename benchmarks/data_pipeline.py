"""Per-core read speed of training samples: the memory-mapped cache against the published per-sample path.

Both run side by side in one process on one thread (``torch.set_num_threads(1)``) over the same synthetic
clips: 480 x 360 JPEG frames and 10 s wav files (VGG-Sound-like). The published path is written out here
independently and lean: decode the wav (PyAV as published, and soundfile as a faster variant), mono mix, centre
3 s window, ``scipy.signal.spectrogram``, log, / 12, one frequency and one time mask; PIL decode, shorter side
to 246 (bicubic), random 224 crop, random flip, to float, ImageNet normalisation. The cache path is
``CachedAVDataset(CACHE, split="train")[i]`` (random crop, flip, SpecAugment; uint8 image, normalised later
on the batch, on the device), and the same plus a CPU normalisation for a like-for-like row. Every sample is
read once per round; the figure is the median over rounds of samples per second.

    python benchmarks/data_pipeline.py [--n 200] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.signal
import soundfile
import torch
from PIL import Image

from fnac_lab.data import CachedAVDataset
from fnac_lab.data.cache import build_cache
from fnac_lab.utils import IMAGENET_MEAN, IMAGENET_STD, normalise_images

from machine import cpu_name

MEAN = np.array(IMAGENET_MEAN, dtype=np.float32)[:, None, None]
STD = np.array(IMAGENET_STD, dtype=np.float32)[:, None, None]


def make_layout(root: Path, n: int, *, seconds: float, rate: int, size: tuple[int, int], seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    (root / "frames").mkdir(parents=True)
    (root / "audio").mkdir()
    t = np.arange(int(rate * seconds)) / rate
    for k in range(n):
        coarse = rng.integers(0, 256, size=(size[1] // 16, size[0] // 16, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize(size, Image.BICUBIC)
        image.save(root / "frames" / f"clip{k:05d}.jpg", quality=90)
        x = 0.3 * np.sin(2 * np.pi * (200 + k) * t) + 0.05 * rng.standard_normal(t.size)
        soundfile.write(str(root / "audio" / f"clip{k:05d}.wav"), x, rate, subtype="PCM_16")


def decode_pyav(path: Path) -> tuple[np.ndarray, int]:
    import av  # here, so that the module's other readers work where PyAV is not installed

    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        chunks = [f.to_ndarray() for f in container.decode(stream)]
        rate = stream.rate
    x = np.concatenate(chunks, axis=1).astype(np.float32)
    return (x / 32768.0 if np.issubdtype(chunks[0].dtype, np.integer) else x), rate


def decode_soundfile(path: Path) -> tuple[np.ndarray, int]:
    x, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    return x.T, rate


def published_sample(frame: Path, audio: Path, decode, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    samples, rate = decode(audio)
    x = np.clip(samples, -1, 1).mean(axis=0)
    n = int(rate * 3)
    start = int(max(len(x) / rate / 2 - 1.5, 0) * rate)
    window = x[start : start + n]
    if len(window) < n:
        window = np.tile(window, n // len(window) + 1)[:n]
    _, _, spec = scipy.signal.spectrogram(window, rate, nperseg=512, noverlap=274)
    spec = np.log(spec + 1e-7)
    for axis in (0, 1):
        width = int(rng.uniform(0, 10))
        first = int(rng.uniform(0, spec.shape[axis] - width))
        index = [slice(None), slice(None)]
        index[axis] = slice(first, first + width)
        spec[tuple(index)] = 0
    spec = spec / 12
    image = Image.open(frame).convert("RGB")
    w, h = image.size
    scale = 246 / min(w, h)
    image = image.resize((max(246, round(w * scale)), max(246, round(h * scale))), Image.BICUBIC)
    top, left = rng.integers(0, image.size[1] - 224 + 1), rng.integers(0, image.size[0] - 224 + 1)
    image = image.crop((left, top, left + 224, top + 224))
    if rng.random() < 0.5:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
    pixels = np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 255
    return (pixels - MEAN) / STD, spec


def median_rates(readers: dict, n: int, rounds: int) -> dict[str, float]:
    """Per reader, the median over ``rounds`` of samples per second reading samples 0..n-1; the readers take turns
    within each round, so that a change in machine load affects them alike. One warm-up pass first."""
    rates: dict[str, list[float]] = {name: [] for name in readers}
    for name, read in readers.items():
        for i in range(n):
            read(i)
    for _ in range(rounds):
        for name, read in readers.items():
            t0 = time.perf_counter()
            for i in range(n):
                read(i)
            rates[name].append(n / (time.perf_counter() - t0))
    return {name: statistics.median(r) for name, r in rates.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=200, help="clips")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=int, default=16000)
    parser.add_argument("--workdir", default=None, help="where to write the clips and the cache (default: a temp dir)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        root, cache = Path(tmp) / "root", Path(tmp) / "cache"
        make_layout(root, args.n, seconds=args.seconds, rate=args.rate, size=(480, 360))
        t0 = time.perf_counter()
        build_cache(root, cache, workers=1, progress=False)
        build_rate = args.n / (time.perf_counter() - t0)
        frames = sorted((root / "frames").iterdir())
        audio = sorted((root / "audio").iterdir())
        rng = np.random.default_rng(0)
        dataset = CachedAVDataset(cache, split="train")
        torch.manual_seed(0)
        rates = median_rates({
            "published path, PyAV wav decode": lambda i: published_sample(frames[i], audio[i], decode_pyav, rng),
            "published path, soundfile wav decode":
                lambda i: published_sample(frames[i], audio[i], decode_soundfile, rng),
            "cache: CachedAVDataset train item": lambda i: dataset[i],
            "cache: train item + ImageNet normalisation": lambda i: normalise_images(dataset[i]["image"][None]),
        }, args.n, args.rounds)
    published, lean = rates["published path, PyAV wav decode"], rates["published path, soundfile wav decode"]
    print(f"machine: {cpu_name()} ({os.cpu_count()} cores), 1 thread; {args.n} clips of {args.seconds:g} s at "
          f"{args.rate} Hz + 480 x 360 jpg; median of {args.rounds} rounds")
    print(f"cache build (1 process): {build_rate:.1f} clips/s")
    print(f"| {'path':<44} | {'samples/s per core':>18} | {'vs PyAV path':>12} | {'vs soundfile path':>17} |")
    print(f"| {'-' * 44} | {'-' * 17}: | {'-' * 11}: | {'-' * 16}: |")
    for name, value in rates.items():
        print(f"| {name:<44} | {value:>18.1f} | {value / published:>11.1f}x | {value / lean:>16.1f}x |")
    ratio = rates["cache: train item + ImageNet normalisation"] / max(published, lean)
    print(f"ratio, cache with normalisation over the faster published variant: {ratio:.1f}x "
          f"(target >= 10x: {'met' if ratio >= 10 else 'not met'})")


if __name__ == "__main__":
    main()
