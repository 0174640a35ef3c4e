"""The ``fnac-lab`` command line (also ``python -m fnac_lab``)."""

from __future__ import annotations

import argparse
import errno
import os
import signal
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..audio import AudioDecodeError
from ..config import (PRESETS, PRETRAIN_PRESETS, ConfigError, PretrainConfig, TrainConfig, preset,
                     pretrain_preset)
from ..data.catalogue import TESTSETS
from ..data.contracts import NegativesSplit
from ..models import PretrainedWeightsError
from ..ogl import OBJECT_REDUCTIONS
from ..utils import FnacError, Terminated, out_of_memory_as_error, output_folder
from .arguments import parse_overrides
from .checkpoints import add_import_command
from .remedies import add_remedies_command
from .stamps import add_stamps_commands

#: Errors reported as one line instead of a traceback.
USER_ERRORS = (FnacError, ConfigError, PretrainedWeightsError, AudioDecodeError)


def _cmd_train(args: argparse.Namespace) -> None:
    from ..distributed import is_main_process
    from ..train import train

    cfg = preset(args.preset, **parse_overrides(args.set))
    with out_of_memory_as_error(f"batch_size={cfg.batch_size} and image_size={cfg.image_size}",
                                "--set batch_size=N or --set image_size=N"):
        result = train(cfg, args.out, resume=not args.no_resume, progress=not args.quiet)
    if not is_main_process():  # under torchrun rank 0 reports
        return
    best = result.summary["best_epoch"]
    test = result.summary.get("test", {})
    print(f"best epoch {best} (validation {cfg.select_metric} {result.summary['val'][cfg.select_metric]:.4f}); "
          f"test AP50 {test.get('ap50', float('nan')):.4f}, mean cIoU {test.get('mean_ciou', float('nan')):.4f}, "
          f"AUC {test.get('auc', float('nan')):.4f}; written to {args.out}")


def _cmd_pretrain(args: argparse.Namespace) -> None:
    from ..pretrain import pretrain

    cfg = pretrain_preset(args.preset, **parse_overrides(args.set, PretrainConfig))
    with out_of_memory_as_error(f"batch_size={cfg.batch_size} and image_size={cfg.image_size}",
                                "--set batch_size=N or --set image_size=N"):
        result = pretrain(cfg, args.out, resume=not args.no_resume, progress=not args.quiet)
    s = result.summary
    print(f"validation accuracy {s['val_accuracy']:.4f} over {cfg.n_classes} object kinds (chance {s['chance']:.4f}) "
          f"after {s['epochs']} epochs; weights in {result.weights} (use --set visual_weights={result.weights})")


def _cmd_evaluate(args: argparse.Namespace) -> None:
    if args.batch_size is not None and args.batch_size < 1:
        raise FnacError(f"--batch-size {args.batch_size}: must be a positive integer (default: the run's "
                        f"eval_batch_size)")
    if args.testset is not None:
        return _cmd_evaluate_benchmark(args)
    from ..checkpoint import load_checkpoint
    from ..datasets import datasets_for_split, negatives_of
    from ..scoring import evaluate_model, evaluate_with_negatives, remove_results
    from ..utils import atomic_savez, folder_lock, resolve_device

    model, cfg, _ = load_checkpoint(args.checkpoint)
    cfg = evaluation_config(cfg, args.set)
    device = resolve_device(args.device)
    datasets = datasets_for_split(cfg, args.split)
    negatives = negatives_of(datasets, args.split)
    if args.split not in datasets:
        raise FnacError(f"split {args.split!r} does not exist for this run (available: {', '.join(datasets)})")
    if isinstance(datasets[args.split], NegativesSplit) and datasets[args.split].negatives:
        raise FnacError(f"split {args.split!r} holds the extended protocol's negatives, which have no ground truth; "
                        f"they are scored with --split test")
    out = output_folder(args.out)
    with folder_lock(out):  # another evaluation writing into out is refused before anything is computed
        remove_results(out)
        settings = dict(batch_size=args.batch_size or cfg.eval_batch_size, device=device, keep_maps=args.save_maps,
                        progress=not args.quiet, desc=args.split)
        with out_of_memory_as_error(f"batches of {settings['batch_size']} at image_size={cfg.image_size}",
                                    "--batch-size N"):
            result = (evaluate_model(model.to(device), datasets[args.split], **settings) if negatives is None else
                      evaluate_with_negatives(model.to(device), datasets[args.split], negatives, **settings))
        if args.save_maps:
            atomic_savez(out / "maps.npz", dict(zip(result.ids, result.maps)))
            if negatives is not None:
                atomic_savez(out / "maps_negatives.npz", dict(zip(result.negatives["ids"], result.negatives["maps"])))
        result.write(out, extra_scores={"split": args.split, "checkpoint": str(args.checkpoint)})  # scores.json last
    s = result.scores
    print(f"{args.split}: AP50 {s['ap50']:.4f}, mean cIoU {s['mean_ciou']:.4f}, AUC {s['auc']:.4f} "
          f"over {s['n_samples']} samples{extended_line(s)}; written to {out}")


#: Settings ``evaluate --set`` may change: what is scored beside the checkpoint's data, never the model or that data.
EVALUATE_SETTINGS = ("test_negatives",)


def evaluation_config(cfg: TrainConfig, items: list[str]) -> TrainConfig:
    """The checkpoint's configuration with the ``--set`` items of ``evaluate`` (only :data:`EVALUATE_SETTINGS`)."""
    overrides = parse_overrides(items)
    refused = [k for k in overrides if k not in EVALUATE_SETTINGS]
    if refused:
        raise ConfigError(f"--set {refused[0]}: evaluate changes only {', '.join(EVALUATE_SETTINGS)}; the rest comes "
                          f"from the checkpoint")
    return cfg.replace(**overrides)


def extended_line(s: dict) -> str:
    """The extended protocol's scores of a ``scores.json``, for the summary line (empty without negatives)."""
    if "extended_ap" not in s:
        return ""
    return (f" and {s['n_negatives']} negatives: extended AP {s['extended_ap']:.4f}, max-F1 {s['max_f1']:.4f}, "
            f"precision {s['precision']:.4f}")


def _cmd_evaluate_benchmark(args: argparse.Namespace) -> None:
    from ..benchmark_evaluation import evaluate_checkpoint
    from ..published_checkpoints import parity_line, published_scores

    for flag in ("data_root", "annotations"):
        if getattr(args, flag) is None:
            raise FnacError(f"--testset {args.testset} needs --{flag.replace('_', '-')}")
    if args.set:
        raise FnacError(f"--set applies to the built-in splits; a real set's negatives come with --testset "
                        f"flickr_extended or vggss_extended")
    batches = f"batches of {args.batch_size}" if args.batch_size else "batches of the checkpoint's eval_batch_size"
    with out_of_memory_as_error(batches, "--batch-size N"):
        result = evaluate_checkpoint(
            args.checkpoint, testset=args.testset, data_root=args.data_root, annotations=args.annotations,
            split_csv=args.split_csv, out=args.out, batch_size=args.batch_size, device=args.device,
            num_workers=args.workers, skip_bad=args.skip_bad, save_maps=args.save_maps, ogl=args.ogl,
            ogl_weights=args.ogl_weights, ogl_object=args.ogl_object, audio_rate=args.audio_rate,
            progress=not args.quiet, negatives=args.negatives)
    out = Path(args.out)
    if result.missing:
        print(f"{len(result.missing)} listed ids are missing on disk (see {out / 'missing.csv'})")
    if result.skipped:
        print(f"{len(result.skipped)} samples skipped as undecodable (see {out / 'skipped.csv'})")

    def line(s: dict) -> str:
        seg = f", mIoU {s['miou']:.4f}, F {s['f_score']:.4f}" if "miou" in s else ""
        return f"AP50 {s['ap50']:.4f}, mean cIoU {s['mean_ciou']:.4f}, AUC {s['auc']:.4f}{seg}"

    s = result.scores
    print(f"{args.testset}: {line(s)} over {s['n_samples']} samples{extended_line(s)}"
          + (f"; with OGL: {line(s['ogl'])}" if "ogl" in s else "") + f"; written to {out}")
    published = published_scores(args.checkpoint, args.testset)
    if published is not None:
        print(parity_line(s, published))


def _cmd_prepare(args: argparse.Namespace) -> None:
    from ..data.prepare import prepare_videos

    report = prepare_videos(args.videos, args.out, workers=args.workers, sample_rate=args.sample_rate,
                            progress=not args.quiet)
    print(f"{report.n_done} clips prepared, {report.n_existing} already done, {len(report.failed)} failed"
          + (f" (see {Path(args.out) / 'failed.csv'})" if report.failed else "") + f"; written to {args.out}")


def _cmd_cache(args: argparse.Namespace) -> None:
    from ..data.cache import build_cache

    report = build_cache(args.data_root, args.out, ids=args.ids, workers=args.workers, skip_bad=args.skip_bad,
                         audio_rate=args.audio_rate, progress=not args.quiet)
    print(f"{report.n_cached} clips cached in {report.out}; {len(report.missing)} listed ids missing on disk, "
          f"{len(report.skipped)} skipped (missing.csv, skipped.csv there)")


def _cmd_ablate(args: argparse.Namespace) -> None:
    from ..ablate import run_grid
    from ..ablate.cluster import executor_options

    if args.jobs is not None and args.jobs < 1:
        raise FnacError(f"--jobs {args.jobs}: the number of points run at once must be 1 or more")
    cluster = executor_options(args.executor, partition=args.slurm_partition, time=args.slurm_time,
                              gpus_per_point=args.gpus_per_point, cpus_per_point=args.cpus_per_point)
    devices = [d for d in args.devices.split(",") if d] if args.devices else None
    run = run_grid(args.grid, args.out, jobs=args.jobs, devices=devices, timeout=args.timeout, progress=not args.quiet,
                   cluster=cluster)
    for o in run.outcomes:
        print(f"{o.status:9s} {o.folder.name}" + (f"  ({o.seconds:.0f} s)" if o.status == "finished" else "")
              + (f"  {o.error}" if o.error else ""))
    counts = {s: sum(o.status == s for o in run.outcomes) for s in ("finished", "skipped", "failed")}
    print(f"{len(run.outcomes)} points: {counts['finished']} run, {counts['skipped']} already finished, "
          f"{counts['failed']} failed; results in {run.out_dir / 'results.csv'}")
    if run.failed:
        raise FnacError(f"{len(run.failed)} of {len(run.outcomes)} grid points failed (error.txt in their folders); "
                        f"run the same command again to retry them")


def _cmd_effects(args: argparse.Namespace) -> None:
    from ..ablate.effects import compact_results, effects_markdown, paired_effects, read_results
    from ..utils import atomic_write_text

    results = read_results(args.results)
    if args.write:
        atomic_write_text(args.write, compact_results(results).to_csv(index=False))
    print(effects_markdown(paired_effects(results)), end="")


def _cmd_diagnosis(args: argparse.Namespace) -> None:
    from ..ablate.diagnosis import (NUMERIC_COLUMNS, compact_diagnosis, decomposition, diagnosis_markdown,
                                   epoch_records, extended_markdown, extended_records, paired_gains,
                                   twin_mismatches)
    from ..ablate.effects import read_results
    from ..utils import atomic_write_text

    path = Path(args.results)
    path = path / "results.csv" if (path / "results.csv").is_file() else path
    results = read_results(path, columns=NUMERIC_COLUMNS,
                           expected="the results of data/grids/fnac_diagnosis.yaml, or its committed csv")
    if args.extended is not None:
        if "folder" not in results:
            raise FnacError(f"{path}: --extended needs a grid's results.csv (its runs' checkpoints)")
        results = extended_records(results, test_negatives=args.extended, progress=not args.quiet)
    mismatches = twin_mismatches(results)
    if mismatches:
        raise FnacError(f"{path}: {len(mismatches)} runs are not twins of their NCE run; first: {mismatches[0]}")
    if args.write:
        atomic_write_text(args.write, compact_diagnosis(results).to_csv(index=False))
    if args.write_epochs:
        if "folder" not in results:
            raise FnacError(f"{path}: --write-epochs needs a grid's results.csv (its runs' folders)")
        atomic_write_text(args.write_epochs, epoch_records(results).to_csv(index=False))
    gains = paired_gains(results)
    print(diagnosis_markdown(gains), end="")
    if "extended_ap" in results and results["extended_ap"].notna().any():
        print("\n" + extended_markdown(results), end="")
    for name, d in decomposition(gains).items():
        print(f"{name}: gain {d['gain']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}] over {int(d['n'])} seeds")


def _cmd_config(args: argparse.Namespace) -> None:
    import json

    cfg = preset(args.preset, **parse_overrides(args.set))
    print(json.dumps(cfg.to_dict(), indent=2))


def _add_run_command(sub, name: str, help: str, func, *, presets, settings: type, out_help: str, last: str) -> None:
    """A command that runs a preset with ``--set`` overrides into ``--out``, resuming from ``last``."""
    p = sub.add_parser(name, help=help)
    p.add_argument("--preset", default="demo", choices=sorted(presets), help="starting configuration")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help=f"override a setting (repeatable); settings: {', '.join(settings.field_names())}")
    p.add_argument("--out", required=True, help=out_help)
    p.add_argument("--no-resume", action="store_true", help=f"start afresh even if {last} exists")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=func)


def _add_evaluate_command(sub) -> None:
    p = sub.add_parser("evaluate", help="score a checkpoint")
    p.add_argument("--checkpoint", required=True, help="a last.pt or best.pt written by train")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--split", default="test", help="built-in split: test (default), val, test_heard, test_unheard")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="built-in data: test_negatives=SHARE scores the test split with SHARE silent and off-screen "
                        "negatives per test clip (the extended protocol), also for a checkpoint trained without them")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--save-maps", action="store_true", help="also write maps.npz (one 224 x 224 map per id)")
    p.add_argument("--quiet", action="store_true")
    real = p.add_argument_group("real benchmarks (instead of --split)")
    real.add_argument("--testset", choices=sorted(TESTSETS))
    real.add_argument("--data-root", help="ROOT with frames/ + audio/ (or both flat)")
    real.add_argument("--annotations", help="Flickr XML directory, vggss.json, or AVSBench mask directory")
    real.add_argument("--split-csv", help="ids to evaluate (first column); default: every annotated id")
    real.add_argument("--negatives", help="flickr_extended, vggss_extended: the negatives list (video,audio,label "
                                          "csv); default DATA_ROOT/flickr_test_plus_silent.csv or "
                                          "vggss_test_plus_silent.csv")
    real.add_argument("--skip-bad", action="store_true", help="skip undecodable files (listed in skipped.csv)")
    real.add_argument("--ogl", action="store_true", help="also score object-guided localisation")
    real.add_argument("--ogl-weights", help="local ResNet-18 ImageNet weights for --ogl (else the timm hub)")
    real.add_argument("--ogl-object", default="mean_abs", choices=OBJECT_REDUCTIONS,
                      help="object map: channel mean of |features| (published) or their L2 norm")
    real.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="data loading processes")
    real.add_argument("--audio-rate", type=int, default=None,
                      help="resample audio to this rate (default: as the checkpoint was trained)")
    p.set_defaults(func=_cmd_evaluate)


def _add_data_commands(sub) -> None:
    p = sub.add_parser("prepare", help="turn video clips into the frames/ + audio/ layout")
    p.add_argument("--videos", required=True, help="directory of clips (mp4, mkv, webm, avi, mov, ...)")
    p.add_argument("--out", required=True, help="data root to write frames/ID.jpg and audio/ID.wav into")
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    p.add_argument("--sample-rate", type=int, default=None, help="resample the audio (default: the native rate)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_prepare)

    p = sub.add_parser("cache", help="pre-decode a data root into memory-mappable files")
    p.add_argument("--data-root", required=True)
    p.add_argument("--ids", default=None, help="id list (first column); default: every clip of the root")
    p.add_argument("--out", required=True, help="cache directory (must not exist yet)")
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    p.add_argument("--skip-bad", action="store_true", help="skip undecodable files (listed in skipped.csv)")
    p.add_argument("--audio-rate", type=int, default=None, help="resample the audio (default: the native rate)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_cache)


def _add_study_commands(sub) -> None:
    p = sub.add_parser("ablate", help="run a notebook over a parameter grid (papermill) and collect results.csv")
    p.add_argument("grid", help="grid file (YAML: notebook, base, grid)")
    p.add_argument("--out", required=True, help="output directory (points already finished there are skipped)")
    p.add_argument("--jobs", type=int, default=None,
                   help="points run at once (default: 1 locally; with --executor slurm, as many as Slurm gives)")
    p.add_argument("--devices", default=None, help="comma-separated devices handed to running points (e.g. cuda:0,cuda:1)")
    p.add_argument("--timeout", type=float, default=None, help="seconds one notebook cell may run before its point fails")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--executor", default="local",
                   help="local (default): points run in threads of this process; slurm: each point a Slurm job, "
                        "submitted through submitit (docs/sweeps-on-a-cluster.md)")
    slurm = p.add_argument_group("--executor slurm", "each point's job; the defaults: docs/sweeps-on-a-cluster.md")
    slurm.add_argument("--slurm-partition", help="partition of the points' jobs (default: the cluster's)")
    slurm.add_argument("--slurm-time", help="time limit of each point's job: MINUTES, H:MM:SS or D-HH:MM:SS (a job "
                                            "stopped at it is requeued and resumes)")
    slurm.add_argument("--gpus-per-point", help="GPUs of each point's job (0: none)")
    slurm.add_argument("--cpus-per-point", help="CPU cores of each point's job (default: the partition's)")
    p.set_defaults(func=_cmd_ablate)

    p = sub.add_parser("effects", help="FNAC's AP50 gains over their NCE twins, paired by seed, from a grid's results")
    p.add_argument("results", help="results.csv of a grid with an fnac_strength axis holding 0 (the twins)")
    p.add_argument("--write", metavar="CSV", help="also write the compact results (one row per run) to this file")
    p.set_defaults(func=_cmd_effects)

    p = sub.add_parser("diagnosis", help="the FNAC diagnosis grid's variants against their NCE twins, paired by seed")
    p.add_argument("results", help="output folder or results.csv of data/grids/fnac_diagnosis.yaml, or its committed csv")
    p.add_argument("--write", metavar="CSV", help="also write the compact results (one row per run) to this file")
    p.add_argument("--write-epochs", metavar="CSV", help="also write every run's epochs (scores, same-class AUROCs)")
    p.add_argument("--extended", type=float, metavar="SHARE", default=None,
                   help="also score every run's best checkpoint on the extended protocol, with SHARE silent and "
                        "off-screen negatives per test clip (columns extended_ap, max_f1, precision)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_diagnosis)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fnac-lab", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    _add_run_command(sub, "train", "train a configuration", _cmd_train, presets=PRESETS, settings=TrainConfig,
                     out_help="output directory", last="OUT/checkpoints/last.pt")
    _add_run_command(sub, "pretrain", "pretrain the visual stream on single built-in objects (ImageNet's stand-in)",
                     _cmd_pretrain, presets=PRETRAIN_PRESETS, settings=PretrainConfig,
                     out_help="output directory (visual_backbone.pt, metrics.jsonl, summary.json)", last="OUT/last.pt")
    _add_evaluate_command(sub)
    _add_data_commands(sub)
    add_import_command(sub)
    add_remedies_command(sub)
    add_stamps_commands(sub)
    _add_study_commands(sub)

    p = sub.add_parser("config", help="print the resolved configuration of a preset")
    p.add_argument("--preset", default="demo", choices=sorted(PRESETS))
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=_cmd_config)
    return parser


def package_version() -> str:
    """The installed version of fnac-lab (``pyproject.toml``), or ``unknown`` when run from a tree never installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("fnac-lab")
    except PackageNotFoundError:
        return "unknown (not installed: pip install -e .)"


def describe_os_error(exc: OSError) -> str:
    """One line for a failed file operation: the file, what went wrong, and for a full disk what to do."""
    where = f"{exc.filename}: " if exc.filename else ""
    what = exc.strerror or str(exc)
    if exc.errno == errno.ENOSPC:
        return f"{where}{what}; free some space and rerun the same command to resume"
    return f"{where}{what}"


#: Exit codes of a command stopped by Ctrl-C (SIGINT) or SIGTERM: 128 + the signal's number, as shells report it.
EXIT_INTERRUPTED, EXIT_TERMINATED = 128 + signal.SIGINT, 128 + signal.SIGTERM


def _raise_terminated(signum, frame) -> None:
    raise Terminated


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While the body runs, SIGTERM (a scheduler, ``docker stop``) raises :class:`fnac_lab.utils.Terminated`, a
    ``KeyboardInterrupt``: every command stops on it as on Ctrl-C. Outside the main thread signals are left alone."""
    try:
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # signal handlers can only be set from the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with sigterm_as_interrupt():
            args.func(args)
    except USER_ERRORS as exc:
        print(f"fnac-lab: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a full disk, an --out that is a file, a folder without write permission
        print(f"fnac-lab: error: {describe_os_error(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (Terminated)
        print("fnac-lab: interrupted; rerun the same command to resume", file=sys.stderr)
        return EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED
    return 0


if __name__ == "__main__":
    sys.exit(main())
