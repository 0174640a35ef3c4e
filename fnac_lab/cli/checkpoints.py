"""``fnac-lab import-checkpoint``: a checkpoint released with the published code as a workbench checkpoint."""

from __future__ import annotations

import argparse

from ..config import PRESETS
from ..data.catalogue import TRAINSETS


def _cmd_import_checkpoint(args: argparse.Namespace) -> None:
    from ..published_checkpoints import import_published
    from .arguments import parse_overrides

    result = import_published(args.path, args.out, fmt=args.format, preset_name=args.preset,
                              trained_on=args.trained_on, overrides=parse_overrides(args.set))
    source = result.source
    published = source["published_vggss"]
    figures = (f"; published VGG-SS AP50 {published['ap50']:.2f}, AUC {published['auc']:.2f}" if published
               else "; no published figures for it")
    print(f"{source['file']} (sha256 {source['sha256'][:12]}...) imported as a {result.config.method} checkpoint of "
          f"preset {args.preset!r}{figures}; written to {result.path}")


def add_import_command(sub) -> None:
    """Add ``import-checkpoint`` to the ``fnac-lab`` subcommands."""
    from ..published_checkpoints import PUBLISHED_FORMATS

    p = sub.add_parser("import-checkpoint", help="turn a checkpoint released with the published code into a "
                                                 "workbench checkpoint (evaluate, OGL, notebooks)")
    p.add_argument("path", help="the released file (a .pth of the published training script)")
    p.add_argument("--format", default="fnac_avl", choices=sorted(PUBLISHED_FORMATS),
                   help="the code base that saved it (default fnac_avl)")
    p.add_argument("--preset", default="paper", choices=sorted(PRESETS),
                   help="the configuration it was trained with (default paper: the published defaults)")
    p.add_argument("--trained-on", choices=sorted(TRAINSETS),
                   help="its training subset; for the four FNAC releases this also records their published figures")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting of the preset (repeatable)")
    p.add_argument("--out", required=True, help="a new folder for checkpoint.pt and source.json")
    p.set_defaults(func=_cmd_import_checkpoint)
