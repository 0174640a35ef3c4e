"""Sizes, colours and marker shapes shared by the figures.

Every figure fits a JupyterLab output area of about 950 px: matplotlib figures are at most
:data:`MAX_FIGURE_INCHES` wide at ``figure.dpi`` 100, plotly figures take the width of the output area (no fixed
width) and wrap wide rows of panels. Built-in classes are drawn in their own colour with a marker of their shape.
"""

from __future__ import annotations

import math
from typing import Mapping, NamedTuple

import numpy as np
import torch
from plotly.colors import qualitative

from ..data.builtin import BuiltinSpec
from ..methods import BASELINE, BASELINE_LABEL, METHODS, UNTRAINED

#: Widest matplotlib figure (inches): a JupyterLab output area is about 950 px wide, figures are drawn at 100 dpi.
MAX_FIGURE_INCHES = 9.5
#: Colour map of localisation maps (perceptually uniform), drawn min-max normalised to [0, 1] with a colour bar.
MAP_CMAP = "inferno"
MATRIX_TITLES = {
    "audio": "audio  A_aud",
    "visual": "visual  A_img",
    "cross": "cross-modal  logits",
    "foreground": "foreground  A_fg",
}


def model_colours() -> dict[str, str]:
    """Each model's colour by the name tables and figures give it: every registered method's label and the NCE
    baseline, each the same with its weights untrained (followed by :data:`~fnac_lab.methods.UNTRAINED`)."""
    named = {cls.label: cls.colour for cls in METHODS.values()}
    named[BASELINE_LABEL] = METHODS[BASELINE].colour
    return {f"{name}{state}": colour for name, colour in named.items() for state in ("", UNTRAINED)}


#: Plotly marker symbol of each built-in object shape.
SHAPE_SYMBOLS = {"ellipse": "circle", "triangle": "triangle-up", "rectangle": "square", "diamond": "diamond",
                 "cross": "cross", "ring": "circle-open", "hourglass": "hourglass", "stripes": "line-ew-open"}


def as_numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def panel_grid(n: int, side: float, *, min_side: float, extra: float) -> tuple[int, int, float]:
    """Rows, columns and side (inches) of ``n`` square panels in a figure at most :data:`MAX_FIGURE_INCHES` wide
    (``extra``: inches beside the panels): one row when ``n`` panels of ``min_side`` fit, else as few rows as
    keep them that large; the side shrinks from ``side`` as far as the columns need."""
    rows = 1
    while math.ceil(n / rows) * min(side, min_side) + extra > MAX_FIGURE_INCHES and rows < n:
        rows += 1
    cols = math.ceil(n / rows)
    return rows, cols, min(side, (MAX_FIGURE_INCHES - extra) / cols)


class ClassStyle(NamedTuple):
    """How one class is drawn: legend name, colour (CSS) and plotly marker symbol."""

    name: str
    colour: str
    symbol: str


def class_styles(labels, *, spec: BuiltinSpec | None = None, names: Mapping[int, str] | None = None
                 ) -> dict[int, ClassStyle]:
    """Style of every class in ``labels``, in label order. With the built-in data's ``spec`` a class is drawn in
    its own colour (:meth:`BuiltinSpec.class_colour`) with the marker of its shape (:data:`SHAPE_SYMBOLS`), named
    by :meth:`BuiltinSpec.class_name`; other labels (real data) get the colours of a qualitative palette, circles,
    and ``names`` (else the label)."""
    classes = sorted({int(c) for c in as_numpy(labels).ravel()})
    names = names or {}
    if spec is not None:
        return {c: ClassStyle(names.get(c, spec.class_name(c)),
                              "rgb({:.0f},{:.0f},{:.0f})".format(*spec.class_colour(c)),
                              SHAPE_SYMBOLS.get(spec.class_shape(c), "circle")) for c in classes}
    palette = qualitative.Dark24
    return {c: ClassStyle(names.get(c, str(c)), palette[k % len(palette)], "circle") for k, c in enumerate(classes)}


def class_marker(style: ClassStyle, size: float) -> dict:
    """A plotly scatter marker in ``style`` with a dark outline (yellow and cyan stay visible on white); open
    symbols (rings, stripes) are drawn with a thick line of the class colour instead."""
    if style.symbol.endswith("-open"):
        return dict(size=size, color=style.colour, symbol=style.symbol, line=dict(width=2.5, color=style.colour))
    return dict(size=size, color=style.colour, symbol=style.symbol, line=dict(width=0.6, color="#333"))
