"""The ``fnac-lab`` command line (also ``python -m fnac_lab``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .audio import AudioDecodeError
from .config import PRESETS, ConfigError, TrainConfig, parse_overrides, preset
from .models import PretrainedWeightsError
from .utils import FnacError

#: Errors reported as one line instead of a traceback.
USER_ERRORS = (FnacError, ConfigError, PretrainedWeightsError, AudioDecodeError, FileNotFoundError)


def _cmd_train(args: argparse.Namespace) -> None:
    from .distributed import is_main_process
    from .train import train

    cfg = preset(args.preset, **parse_overrides(args.set))
    result = train(cfg, args.out, resume=not args.no_resume, progress=not args.quiet)
    if not is_main_process():  # under torchrun rank 0 reports
        return
    best = result.summary["best_epoch"]
    test = result.summary.get("test", {})
    print(f"best epoch {best} (validation {cfg.select_metric} {result.summary['val'][cfg.select_metric]:.4f}); "
          f"test AP50 {test.get('ap50', float('nan')):.4f}, mean cIoU {test.get('mean_ciou', float('nan')):.4f}, "
          f"AUC {test.get('auc', float('nan')):.4f}; written to {args.out}")


def _cmd_evaluate(args: argparse.Namespace) -> None:
    import numpy as np

    from .train import build_datasets, load_checkpoint
    from .evaluate import evaluate_model
    from .utils import resolve_device

    model, cfg, _ = load_checkpoint(args.checkpoint)
    device = resolve_device(args.device)
    datasets = build_datasets(cfg)
    if args.split not in datasets:
        raise FnacError(f"split {args.split!r} does not exist for this run (available: {', '.join(datasets)})")
    result = evaluate_model(model.to(device), datasets[args.split], batch_size=args.batch_size or cfg.eval_batch_size,
                            device=device, keep_maps=args.save_maps, progress=not args.quiet, desc=args.split)
    out = Path(args.out)
    result.write(out, extra_scores={"split": args.split, "checkpoint": str(args.checkpoint)})
    if args.save_maps:
        np.savez_compressed(out / "maps.npz", **{i: m for i, m in zip(result.ids, result.maps)})
    s = result.scores
    print(f"{args.split}: AP50 {s['ap50']:.4f}, mean cIoU {s['mean_ciou']:.4f}, AUC {s['auc']:.4f} "
          f"over {s['n_samples']} samples; written to {out}")


def _cmd_config(args: argparse.Namespace) -> None:
    import json

    cfg = preset(args.preset, **parse_overrides(args.set))
    print(json.dumps(cfg.to_dict(), indent=2))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fnac-lab", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a configuration")
    p.add_argument("--preset", default="demo", choices=sorted(PRESETS), help="starting configuration")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help=f"override a setting (repeatable); settings: {', '.join(TrainConfig.field_names())}")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--no-resume", action="store_true", help="start afresh even if OUT/checkpoints/last.pt exists")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("evaluate", help="score a checkpoint")
    p.add_argument("--checkpoint", required=True, help="a last.pt or best.pt written by train")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--split", default="test", help="built-in split: test (default), val, test_heard, test_unheard")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--save-maps", action="store_true", help="also write maps.npz (one 224 x 224 map per id)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("config", help="print the resolved configuration of a preset")
    p.add_argument("--preset", default="demo", choices=sorted(PRESETS))
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=_cmd_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except USER_ERRORS as exc:
        print(f"fnac-lab: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
