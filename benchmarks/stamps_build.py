"""How fast the stamps benchmark is built, prepared and cached, and what it takes on disk, measured in one run.

    python benchmarks/stamps_build.py [--n 1000] [--workers 2] [--size 224] [--seconds 3]

Builds ``n`` training clips (plus the smallest validation and test splits) from the fetched Tux Paint packages
(``make stamps``) into a temporary folder with ``fnac-lab stamps build``, then runs ``fnac-lab prepare`` and
``fnac-lab cache`` on them, each with ``--workers`` processes, and prints the clips per second of each step, the
MB per 1,000 clips of the videos, of the prepared frames and audio and of the cache, and prepare + cache against
the build. The goal: 10,000 training clips at 224 px built in at most 10 minutes on 2 cores (16.7 clips/s), and
prepare plus cache faster than the build.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from machine import describe_machine

from fnac_lab.cli import main
from fnac_lab.data.stamps import default_source


def folder_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


def timed(argv: list[str]) -> float:
    t0 = time.perf_counter()
    if main(argv) != 0:
        sys.exit(f"fnac-lab {' '.join(argv)} failed")
    return time.perf_counter() - t0


def run(args: argparse.Namespace) -> None:
    if not (default_source() / "stamps").is_dir():
        sys.exit(f"no Tux Paint stamps in {default_source()}: run `make stamps` first")
    print(f"machine: {describe_machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "stamps"
        workers = ["--workers", str(args.workers), "--quiet"]
        build_s = timed(["stamps", "build", "--out", str(root), "--n-train", str(args.n), "--n-val", "1", "--n-test",
                         "1", "--size", str(args.size), "--seconds", str(args.seconds), *workers])
        n_clips = len(list((root / "videos").glob("*.mp4")))
        prepare_s = timed(["prepare", "--videos", str(root / "videos"), "--out", str(root), *workers])
        cache_s = timed(["cache", "--data-root", str(root), "--ids", str(root / "train.csv"), "--out",
                         str(Path(tmp) / "cache"), *workers])
        per_k = 1000 / n_clips
        print(f"{n_clips} clips ({args.n} training clips), {args.size} px, {args.seconds:g} s, {args.workers} workers")
        print(f"build:   {build_s:7.1f} s, {n_clips / build_s:6.1f} clips/s; videos {folder_mb(root / 'videos') * per_k:.1f} "
              f"MB per 1,000 clips")
        print(f"prepare: {prepare_s:7.1f} s, {n_clips / prepare_s:6.1f} clips/s; frames + audio "
              f"{(folder_mb(root / 'frames') + folder_mb(root / 'audio')) * per_k:.1f} MB per 1,000 clips")
        print(f"cache:   {cache_s:7.1f} s, {args.n / cache_s:6.1f} clips/s; cache "
              f"{folder_mb(Path(tmp) / 'cache') * 1000 / args.n:.1f} MB per 1,000 clips")
        print(f"prepare + cache take {(prepare_s + cache_s) / build_s:.2f}x the build's time; 10,000 training clips "
              f"would build in {10_000 / (args.n / build_s) / 60:.1f} min at this rate (goal: 10 min)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="training clips")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--seconds", type=float, default=3.0)
    run(parser.parse_args())
