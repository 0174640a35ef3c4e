"""Paired effects of FNAC over its NCE twin, from the results of a grid whose ``fnac_strength`` axis holds 0.

A grid point with ``fnac_strength = 0`` is the NCE-only twin of every point that shares its setting and seed
(same data, batches and initialisation; only the loss differs). For each setting and strength above 0 the AP50
gains of the seeds are paired with their twins and summarised as a mean with a 95 % Student-t interval:

    gain_s = AP50(FNAC, seed s) - AP50(NCE twin, seed s)
    mean +- t_{0.975, n-1} * sd(gain) / sqrt(n)

beside each model's final false-negative detection (``fn_auroc_*`` at the last epoch).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import scipy.stats

from ..utils import FnacError, describe

#: Axes that define a setting in ``data/grids/fnac_effect.yaml``.
EFFECT_SETTING = ("visual_pretrain", "class_bias_p", "batch_size")
STRENGTH, SEED = "fnac_strength", "seed"
EFFECT_FN_AUROC = ("fn_auroc_audio", "fn_auroc_visual", "fn_auroc_foreground")
#: The columns of the effect study's committed results (``data/results/fnac_effect.csv``; ``stamps_fnac.csv``
#: begins with them).
EFFECT_COLUMNS = (*EFFECT_SETTING, STRENGTH, SEED, "ap50", "mean_ciou", "auc", "best_epoch", *EFFECT_FN_AUROC,
                  "fn_ratio", "train_seconds", "status")


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """``(mean, low, high)``: the Student-t confidence interval of the mean (NaN bounds below two values)."""
    x = np.asarray(values, dtype=np.float64)
    mean = float(x.mean())
    if len(x) < 2:
        return mean, math.nan, math.nan
    half = float(scipy.stats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return mean, mean - half, mean + half


def read_results(path: str | Path, metric: str = "ap50", *, columns: Sequence[str] | None = None,
                 expected: str | None = None) -> pd.DataFrame:
    """An ``ablate`` results.csv for :func:`paired_effects`; a folder, an empty or unreadable file, or one without
    the numeric ``columns`` (default ``fnac_strength``, ``seed`` and ``metric``) is refused with one line naming the
    file and, as ``expected``, what it should have been."""
    path = Path(path)
    needed = tuple(columns) if columns is not None else (STRENGTH, SEED, metric)
    expected = expected or f"the results.csv of a grid with an {STRENGTH} axis holding 0 and a {SEED} axis"
    if path.is_dir():
        raise FnacError(f"{path}: is a folder; name a grid's results file (such as {path / 'results.csv'})")
    if not path.is_file():
        raise FnacError(f"{path}: results file not found")
    try:
        results = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise FnacError(f"{path}: is empty; expected {expected}") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise FnacError(f"{path}: not a readable csv ({describe(exc)})") from None
    missing = [c for c in needed if c not in results]
    if missing:
        raise FnacError(f"{path}: no {', '.join(missing)} column (needs {', '.join(needed)}: {expected})")
    for column in needed:
        values = results[column]
        bad = values[pd.to_numeric(values, errors="coerce").isna() & values.notna()]
        if len(bad):
            raise FnacError(f"{path}: column {column} holds a value that is not a number ({bad.iloc[0]!r})")
    return results


def compact_results(results: pd.DataFrame) -> pd.DataFrame:
    """The columns of :data:`EFFECT_COLUMNS` that ``results`` (an ``ablate`` results.csv) has, with the scratch
    visual stream spelled ``scratch`` instead of an empty cell."""
    table = results[[c for c in EFFECT_COLUMNS if c in results]].copy()
    if "visual_pretrain" in table:
        table["visual_pretrain"] = table["visual_pretrain"].fillna("scratch")
    return table


def paired_effects(results: pd.DataFrame, metric: str = "ap50", setting: Sequence[str] = EFFECT_SETTING
                   ) -> pd.DataFrame:
    """One row per setting and strength above 0: seeds paired with their twin, the mean gain in ``metric`` and
    its 95 % interval, both models' mean ``metric``, and both models' final ``fn_auroc_*`` (seed means).

    Only finished points count; a seed whose FNAC point or twin is missing is left out (``n`` says how many
    pairs remain)."""
    done = compact_results(results)
    if "status" in done:
        done = done[done["status"] == "finished"]
    setting = [c for c in setting if c in done]
    twins = done[done[STRENGTH] == 0].set_index([*setting, SEED])
    rows = []
    for key, group in done[done[STRENGTH] > 0].groupby([*setting, STRENGTH], sort=False):
        key = key if isinstance(key, tuple) else (key,)
        where = dict(zip([*setting, STRENGTH], key))
        pairs = []
        for _, run in group.iterrows():
            index = tuple(run[c] for c in setting) + (run[SEED],)
            if index in twins.index:
                pairs.append((run, twins.loc[index]))
        if not pairs:
            continue
        gains = [f[metric] - n[metric] for f, n in pairs]
        mean, low, high = t_interval(gains)
        row = {**where, "n": len(pairs), "FNAC": np.mean([f[metric] for f, _ in pairs]),
               "NCE": np.mean([n[metric] for _, n in pairs]), "gain": mean, "low": low, "high": high,
               "seeds": ",".join(str(int(f[SEED])) for f, _ in pairs),
               "gains": ",".join(f"{g:+.3f}" for g in gains)}
        for col in EFFECT_FN_AUROC:
            if col in done:
                row[f"{col} FNAC"] = float(np.mean([f[col] for f, _ in pairs]))
                row[f"{col} NCE"] = float(np.mean([n[col] for _, n in pairs]))
        rows.append(row)
    return pd.DataFrame(rows)


def effects_markdown(effects: pd.DataFrame) -> str:
    """The effect study's table (docs/findings/effect-study.md) of :func:`paired_effects`: one row per setting, gain
    and interval, detection AUROCs."""
    header = ("| visual stream | `class_bias_p` | B | w / B | seeds | NCE AP50 | FNAC AP50 | gain (95 % CI) | gain by seed "
              "| AUROC audio FNAC / NCE | AUROC visual FNAC / NCE | AUROC foreground FNAC / NCE |")
    lines = [header, "| --- | --: | --: | --: | --: | --: | --: | --- | --- | --: | --: | --: |"]
    for r in effects.to_dict("records"):
        interval = "" if math.isnan(r["low"]) else f" [{r['low']:+.3f}, {r['high']:+.3f}]"
        marker = " **above 0**" if r["low"] > 0 else (" *below 0*" if r["high"] < 0 else "")

        def pair(name: str) -> str:
            f, n = r.get(f"fn_auroc_{name} FNAC"), r.get(f"fn_auroc_{name} NCE")
            return "" if f is None or math.isnan(f) else f"{f:.3f} / {n:.3f}"

        pretrain = r.get("visual_pretrain")
        stream = "" if pretrain is None else "scratch" if pretrain == "scratch" else f"pretrained ({pretrain})"
        bias = f"{r['class_bias_p']:g}" if "class_bias_p" in r else ""  # a grid without the axis: an empty cell
        batch = f"{int(r['batch_size'])}" if "batch_size" in r else ""
        gains = r["gains"].replace(",", ", ") if isinstance(r.get("gains"), str) else ""
        lines.append(f"| {stream} | {bias} | {batch} | {r[STRENGTH]:g} | {r['n']} | "
                     f"{r['NCE']:.3f} | {r['FNAC']:.3f} | {r['gain']:+.3f}{interval}{marker} | {gains} | "
                     f"{pair('audio')} | {pair('visual')} | {pair('foreground')} |")
    return "\n".join(lines) + "\n"
