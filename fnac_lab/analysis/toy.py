"""The tutorial's worked example: toy embeddings built by hand, and matrices shown as labelled tables.

A toy embedding space has one axis per kind of thing (``axes``, e.g. ``{"dog": 0, "car": 1, "piano": 2,
"background": 3}``); a clip is a unit vector along its class's axis, a frame a small map of background cells with
objects painted into some of them. Everything is float64, so the numbers the tutorial prints are exact.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F


def unit_vector(kind: str, *, axes: Mapping[str, int], extra: Sequence[tuple[int, float]] = ()) -> torch.Tensor:
    """The unit vector along ``axes[kind]``, nudged by ``extra`` = [(axis, amount), ...] before normalising
    (float64, ``len(axes)`` entries)."""
    v = torch.zeros(len(axes), dtype=torch.float64)
    v[axes[kind]] = 1.0
    for axis, amount in extra:
        v[axis] += amount
    return F.normalize(v, dim=0)


def toy_frame(objects: Mapping[tuple[int, int], str], *, axes: Mapping[str, int], background: str = "background",
              nudge: float = 0.3, size: int = 2) -> torch.Tensor:
    """A ``[len(axes), size, size]`` map: every cell the unit vector of ``background``, except the cells of
    ``objects`` = {(row, col): kind}, which hold ``kind``'s unit vector nudged by ``nudge`` towards the background
    (an object seen in a frame is never quite its sound)."""
    cells = unit_vector(background, axes=axes).repeat(size, size, 1).permute(2, 0, 1).clone()
    for (r, c), kind in objects.items():
        cells[:, r, c] = unit_vector(kind, axes=axes, extra=[(axes[background], nudge)])
    return cells


def labelled_table(matrix, *, rows: Sequence[str], cols: Sequence[str] | None = None,
                   decimals: int = 3) -> pd.DataFrame:
    """A matrix (tensor, array or nested lists) as a DataFrame with ``rows`` and ``cols`` (default: ``rows``) as
    labels, rounded to ``decimals``; ``+ 0.0`` turns -0.000 into 0.000."""
    values = np.asarray(matrix.detach().cpu() if isinstance(matrix, torch.Tensor) else matrix, dtype=float)
    labels = list(cols if cols is not None else rows)
    return pd.DataFrame(values.round(decimals) + 0.0, index=list(rows), columns=labels)
