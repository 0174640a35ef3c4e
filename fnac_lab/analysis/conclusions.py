"""The closing sentences of the analysis notebooks (03, 04, 05): each score of a model against its NCE twin's, said
as the numbers say it, and whether the models were trained at all."""

from __future__ import annotations

from typing import Mapping

import pandas as pd

from ..methods import UNTRAINED


def untrained_note(models: list[str]) -> str | None:
    """A sentence when any of ``models`` (names as the notebooks give them) has not been trained."""
    untrained = [m for m in models if m.endswith(UNTRAINED)]
    if not untrained:
        return None
    return (f"{' and '.join(untrained)} {'is' if len(untrained) == 1 else 'are'} untrained (smoke mode): these "
            f"numbers compare random initialisations, not what the methods learn.")


def model_comparison(table: pd.DataFrame, *, what: str = "", columns: Mapping[str, str] | None = None,
                     chance: float | None = None) -> list[str]:
    """One sentence per column of ``table`` (rows: models, the first one compared with the second): ``what`` of
    each model (given) and which is higher by how much, ``columns`` naming the columns (default: their own names), a
    ``chance`` level added where given; then :func:`untrained_note`."""
    models = list(table.index)
    names = columns or {c: str(c) for c in table.columns}
    out = []
    for column, name in names.items():
        values = table[column]
        text = f"{name}: {what + ' ' if what else ''}" + " against ".join(f"{values[m]:.3f} for {m}" for m in models)
        if len(models) == 2:
            a, b = models
            diff = float(values[a] - values[b])
            text += (", equal" if diff == 0 else f", {a} {'higher' if diff > 0 else 'lower'} by {abs(diff):.3f}")
        out.append(text + (f" (chance {chance:.3f})." if chance is not None else "."))
    note = untrained_note(models)
    return out + ([note] if note else [])
