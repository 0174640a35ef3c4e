"""``fnac-lab remedies``: the label-free remedies against their NCE twins, from a remedies grid's results."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..utils import FnacError


def _cmd_remedies(args: argparse.Namespace) -> None:
    from ..ablate.effects import read_results
    from ..ablate.remedies import (SETTING, chosen_knobs, detection_markdown, epoch_records,
                                   paired_gains, remedies_markdown, remedies_statements, twin_mismatches,
                                   with_detection)
    from ..utils import atomic_write_text

    path = Path(args.results)
    path = path / "results.csv" if (path / "results.csv").is_file() else path
    results = read_results(path, columns=(SETTING, "seed", "ap50", "warmup_nce"),
                           expected="the results of data/grids/fn_remedies*.yaml, or their committed csv")
    if "method" not in results:
        raise FnacError(f"{path}: no 'method' column; expected the results of data/grids/fn_remedies*.yaml")
    if "folder" in results:
        epochs = epoch_records(results)
    elif args.epochs:
        epochs = read_results(args.epochs, columns=(SETTING, "seed", "epoch", "nce"),
                              expected="the epochs of a remedies grid (--write-epochs)")
    else:
        raise FnacError(f"{path}: the twin check needs the runs' epochs; pass --epochs CSV (written by --write-epochs)")
    mismatches = twin_mismatches(results, epochs)
    if mismatches:
        raise FnacError(f"{path}: {len(mismatches)} runs are not twins of their NCE run; first: {mismatches[0]}")
    if args.write:
        atomic_write_text(args.write, with_detection(results, epochs).to_csv(index=False))
    if args.write_epochs:
        atomic_write_text(args.write_epochs, epochs.to_csv(index=False))
    print(remedies_markdown(paired_gains(results)), end="")
    if "val_ap50" in results:
        for method, variant in chosen_knobs(results).items():
            print(f"{method}: best validation AP50 with {variant}")
    for bias in sorted(results[SETTING].unique(), reverse=True):
        if "fn_precision" in epochs and epochs.loc[epochs[SETTING] == bias, "fn_precision"].notna().any():
            print("\n" + detection_markdown(epochs, bias), end="")
    print("\n" + "\n".join(f"- {line}" for line in remedies_statements(results, epochs)))


def add_remedies_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("remedies", help="the label-free remedies against their NCE twins, paired by seed")
    p.add_argument("results", help="output folder or results.csv of data/grids/fn_remedies*.yaml, or its committed csv")
    p.add_argument("--write", metavar="CSV", help="also write the compact results (one row per run, with its last epoch's detection) to this file")
    p.add_argument("--write-epochs", metavar="CSV",
                   help="also write every run's epochs (scores, detection precision and recall)")
    p.add_argument("--epochs", metavar="CSV", help="the runs' epochs, for a committed csv (no run folders)")
    p.set_defaults(func=_cmd_remedies)
