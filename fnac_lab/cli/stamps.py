"""``fnac-lab stamps``: Tux Paint's real photographs and recordings as a benchmark (:mod:`fnac_lab.data.stamps`)."""

from __future__ import annotations

import argparse
import os
from collections import Counter
from pathlib import Path

from ..utils import FnacError, stamps_benchmark_root


def _cmd_fetch(args: argparse.Namespace) -> None:
    from ..data.stamps import PACKAGES, fetch

    source = fetch(args.cache)
    print(f"{', '.join(PACKAGES)} extracted; source {source}")
    print((source.parents[2] / "packages.txt").read_text().rstrip())


def _cmd_check(args: argparse.Namespace) -> None:
    from ..data.stamps import ROLES, missing_files, open_source, read_backgrounds, read_class_table

    source = open_source(args.source, backgrounds=args.backgrounds)
    stamps, backgrounds = read_class_table(), read_backgrounds()
    missing = missing_files(source, stamps, backgrounds)
    if missing:
        raise FnacError(f"{len(missing)} files of the class table are missing from the source, the first: "
                        f"{missing[0]}")
    roles = Counter(s.role for s in stamps)
    print(f"{source.stamps}: {len(stamps)} sounding stamps of {len({s.label for s in stamps})} classes ("
          + ", ".join(f"{roles[r]} {r}" for r in ROLES) + f"), {sum(b.role != 'excluded' for b in backgrounds)} "
          f"backgrounds; every file present")


def _cmd_build(args: argparse.Namespace) -> None:
    from ..data.cache import build_cache
    from ..data.catalogue import STAMPS_LAYOUT
    from ..data.prepare import prepare_videos
    from ..data.stamps import open_source
    from ..data.stamps_build import build
    from ..data.stamps_render import BuildSettings

    if args.workers < 1:
        raise FnacError(f"--workers {args.workers}: must be at least 1")
    settings = BuildSettings(seed=args.seed, n_train=args.n_train, n_val=args.n_val, n_test=args.n_test,
                             size=args.size, seconds=args.seconds, sample_rate=args.sample_rate,
                             max_distractors=args.max_distractors, noise_snr_db=args.noise_snr_db)
    root = Path(args.out) if args.out else stamps_benchmark_root()
    counts = build(open_source(args.source, backgrounds=args.backgrounds), root, settings, workers=args.workers,
                   skip_bad=args.skip_bad, progress=not args.quiet)
    print(f"{sum(counts.values())} clips in {root}/videos (" + ", ".join(f"{n} {s}" for s, n in counts.items()) + ")")
    if not args.prepare:
        print(f"next: fnac-lab prepare --videos {root}/videos --out {root}, then fnac-lab cache --data-root {root} "
              f"--ids {root}/train.csv --out {root}/cache")
        return
    report = prepare_videos(root / "videos", root, workers=args.workers, progress=not args.quiet)
    if report.failed:
        raise FnacError(f"{len(report.failed)} clips of {root}/videos failed to prepare (see {root}/failed.csv)")
    print(f"{report.n_done} clips prepared, {report.n_existing} already done")
    cache = root / STAMPS_LAYOUT["cache_dir"]
    if (cache / "meta.json").is_file():
        print(f"{cache}: the training clips' cache exists and is kept")
    else:
        cached = build_cache(root, cache, ids=root / STAMPS_LAYOUT["train_ids"], workers=args.workers,
                             progress=not args.quiet)
        print(f"{cached.n_cached} training clips cached in {cached.out}")
    print(f"train on it: fnac-lab train --preset stamps --set test_root={root} --out runs/stamps")


def _cmd_study(args: argparse.Namespace) -> None:
    from ..ablate.stamps_study import run_study

    if args.jobs < 1:
        raise FnacError(f"--jobs {args.jobs}: the number of points run at once must be 1 or more")
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    results = run_study(args.out, root=args.root or stamps_benchmark_root(), seeds=seeds,
                        forms=args.forms.split(","), batch_size=args.batch_size, jobs=args.jobs,
                        workers=args.workers, sets=args.set, progress=not args.quiet)
    failed = int((results["status"] == "failed").sum())
    print(f"{len(results)} points, {failed} failed; results in {args.out}/results.csv (pair them: fnac-lab effects "
          f"{args.out}/results.csv)")
    if failed:
        raise FnacError(f"{failed} points failed (error.txt in their folders)")


def add_stamps_commands(sub) -> None:
    p = sub.add_parser("stamps", help="Tux Paint's real photographs and recordings as a benchmark")
    commands = p.add_subparsers(dest="stamps_command", required=True)
    q = commands.add_parser("fetch", help="download and extract the Debian packages (no root needed)")
    q.add_argument("--cache", default=None, help="folder to extract into (default: $FNAC_LAB_CACHE/stamps or "
                                                 "~/.cache/fnac-lab/stamps)")
    q.set_defaults(func=_cmd_fetch)
    q = commands.add_parser("check", help="check that a source holds every file of the class table")
    _add_source_arguments(q)
    q.set_defaults(func=_cmd_check)
    q = commands.add_parser("build", help="build the benchmark's clips and annotations (resumes; seeded)")
    _add_source_arguments(q)
    q.add_argument("--out", default=None, help="ROOT to write videos/, the split lists and annotations into (default: "
                                               "$FNAC_LAB_CACHE/stamps-benchmark, where the stamps preset reads)")
    q.add_argument("--prepare", action="store_true", help="then prepare the videos into ROOT and cache the "
                                                          "training clips into ROOT/cache, ready to train")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--n-train", type=int, default=1000, help="training clips")
    q.add_argument("--n-val", type=int, default=100, help="validation clips")
    q.add_argument("--n-test", type=int, default=200, help="clips per test split (and negatives beside test_heard)")
    q.add_argument("--size", type=int, default=224, help="picture side in pixels")
    q.add_argument("--seconds", type=float, default=3.0, help="clip length")
    q.add_argument("--sample-rate", type=int, default=16000)
    q.add_argument("--max-distractors", type=int, default=3, help="silent stamps per picture: 0 to this")
    q.add_argument("--noise-snr-db", type=float, default=None, help="add pink noise at this SNR (default: none)")
    q.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    q.add_argument("--skip-bad", action="store_true", help="leave out unreadable stamps, listed in skipped.csv")
    q.add_argument("--quiet", action="store_true")
    q.set_defaults(func=_cmd_build)
    q = commands.add_parser("study", help="FNAC against its NCE twin on the stamps benchmark, paired over seeds")
    q.add_argument("--out", required=True, help="study folder (resumes the study it holds)")
    q.add_argument("--root", default=None, help="the benchmark's root (default: where make stamps-benchmark builds)")
    q.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated seeds")
    q.add_argument("--forms", default="nce,study,published", help="comma-separated forms (fnac_lab.ablate."
                                                                    "stamps_study.FORMS)")
    q.add_argument("--batch-size", type=int, default=64)
    q.add_argument("--jobs", type=int, default=1, help="points trained at once")
    q.add_argument("--workers", type=int, default=2, help="data loading processes of the held-out evaluation")
    q.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a setting of every point")
    q.add_argument("--quiet", action="store_true")
    q.set_defaults(func=_cmd_study)


def _add_source_arguments(p) -> None:
    p.add_argument("--source", default=None, help="a folder with stamps/ (and templates/): an installed "
                                                  "/usr/share/tuxpaint or the upstream stamps tree (default: the "
                                                  "fetched packages)")
    p.add_argument("--backgrounds", default=None, help="folder of background photographs (default: SOURCE/templates)")
