"""``fnac-lab stamps``: Tux Paint's real photographs and recordings as a benchmark (:mod:`fnac_lab.data.stamps`)."""

from __future__ import annotations

import argparse
from collections import Counter

from ..utils import FnacError


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


def _add_source_arguments(p) -> None:
    p.add_argument("--source", default=None, help="a folder with stamps/ (and templates/): an installed "
                                                  "/usr/share/tuxpaint or the upstream stamps tree (default: the "
                                                  "fetched packages)")
    p.add_argument("--backgrounds", default=None, help="folder of background photographs (default: SOURCE/templates)")
