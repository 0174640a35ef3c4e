"""Our sweep results beside the paper's published tables, and what a sweep shows in one sentence."""

from __future__ import annotations

import math
from typing import Any, Sequence

import pandas as pd

from ..paper import PaperTable
from .grid import value_label


def _value_key(value: Any) -> str:
    """A knob value as a comparable string: numbers in shortest form (``0`` and ``0.0`` alike)."""
    text = value_label(value)
    if text in ("True", "False"):
        return text
    try:
        return f"{float(text):g}"
    except ValueError:
        return text


def paper_comparison(results: pd.DataFrame, knob: str, paper: PaperTable | None,
                     metrics: Sequence[str] = ("ap50", "mean_ciou", "auc")) -> pd.DataFrame:
    """One row per knob value (ours and the paper's, outer-joined): our metrics (0-1) beside the paper's columns (%)."""
    ours = results.assign(**{knob: results[knob].map(_value_key)}).set_index(knob)
    ours = ours[[m for m in metrics if m in ours]].add_prefix("ours: ")
    if paper is None or not paper.values:
        return ours
    published = pd.DataFrame({f"paper: {c} (%)": v for c, v in paper.columns.items()},
                             index=pd.Index([_value_key(v) for v in paper.values], name=knob))
    order = list(dict.fromkeys([*ours.index, *published.index]))
    return ours.join(published, how="outer").loc[order]


def sweep_statement(results: pd.DataFrame, knob: str, metric: str = "ap50") -> str:
    """Which value of ``knob`` scored best and worst on ``metric``, and whether the spread exceeds the noise of a
    difference between two points (``2 * sqrt(2) * SE``, ``SE`` the binomial standard error of one AP50)."""
    done = results.dropna(subset=[metric]) if metric in results else results.iloc[0:0]
    if len(done) < 2:
        return f"Fewer than two finished points: nothing to compare for {knob}."
    best, worst = done.loc[done[metric].idxmax()], done.loc[done[metric].idxmin()]
    spread = best[metric] - worst[metric]
    p, n = done[metric].mean(), done["n_samples"].iloc[0] if "n_samples" in done else None
    text = (f"{knob}: best {metric} {best[metric]:.3f} at {best[knob]}, worst {worst[metric]:.3f} at {worst[knob]} "
            f"(spread {spread:.3f}")
    if n and metric == "ap50":
        noise = 2 * math.sqrt(2 * p * (1 - p) / n)
        verdict = "larger" if spread > noise else "not larger"
        text += f", {verdict} than twice the standard error of a difference of two points: {noise:.3f} at {int(n)} test samples"
    return text + ")."
