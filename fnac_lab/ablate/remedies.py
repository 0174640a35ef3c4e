"""Which label-free remedy recovers the fixable gap: the runs of ``data/grids/fn_remedies*.yaml`` paired with their NCE
twins, the twin check, the share of the oracle mask's gain each remedy recovers, and the knob chosen on validation.

A run's *variant* is its method's label with the options its grid point set (``FN elimination (k 3)``,
``Debiased NCE (tau_plus 0.05)``); ``NCE + oracle mask`` is NCE with ``nce.nce_fn_mask=oracle``. Each variant is
paired with the plain NCE run of the same ``class_bias_p`` and seed (same data, batches and initialisation):

    gain_s     = AP50(variant, seed s) - AP50(NCE twin, seed s),   mean +- t_{0.975, n-1} sd(gain) / sqrt(n)
    recovered  = mean_s gain_s(variant) / mean_s gain_s(NCE + oracle mask)   over the seeds both have,
                 with a 95 % percentile bootstrap interval over those seeds (10,000 resamples, seed 0)

Every remedy, and the oracle bound ``supcon_oracle``, trains plain NCE in its warm-up of ``W`` epochs: its
``warmup_nce`` (its NCE loss in epoch ``W``) must equal its twin's NCE loss in epoch ``W`` to the last digit
(:func:`twin_mismatches`); the oracle mask changes NCE itself and is not checked.
"""

from __future__ import annotations

import json
import math
from typing import Any, Mapping

import numpy as np
import pandas as pd

from ..methods import BASELINE, METHODS
from .effects import EFFECT_FN_AUROC, SEED, t_interval

SETTING = "class_bias_p"
NCE = METHODS[BASELINE].label
ORACLE_MASK = f"{NCE} + oracle mask"
#: The grid's option that makes NCE the oracle-mask bound.
MASK_OPTION = f"{BASELINE}.nce_fn_mask"
#: The columns of a compact remedies table, before each method's option columns (``method.option``).
REMEDY_COLUMNS = ("variant", "method", SETTING, SEED, "warmup_epochs", "ap50", "mean_ciou", "auc", "val_ap50", "best_epoch",
                  *EFFECT_FN_AUROC, "fn_auroc_cross", "warmup_nce", "fn_ratio", "train_seconds", "status")
#: The columns of the epochs table (one row per run and epoch); ``fn_precision``, ``fn_recall`` and
#: ``fn_detected_share`` are the detecting remedies' detection against the batches' same-class pairs (empty for the
#: others).
EPOCH_COLUMNS = ("variant", SETTING, SEED, "epoch", "ap50", "fn_auroc_audio", "fn_precision", "fn_recall",
                 "fn_detected_share", "nce", "loss")
BOOTSTRAP = 10_000


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _option_columns(table: pd.DataFrame) -> list[str]:
    return [c for c in table.columns if "." in c and c.split(".", 1)[0] in METHODS]


def variant_name(run: Mapping[str, Any]) -> str:
    """``NCE``, ``NCE + oracle mask``, or the method's label with the options the run set, in column order."""
    method = run["method"]
    if method == BASELINE and run.get(MASK_OPTION) == "oracle":
        return ORACLE_MASK
    set_options = [f"{k.split('.', 1)[1]} {v:g}" if isinstance(v, float) else f"{k.split('.', 1)[1]} {v}"
                   for k, v in run.items() if k.startswith(f"{method}.") and not _missing(v)]
    return METHODS[method].label + (f" ({', '.join(set_options)})" if set_options else "")


def warmup_epochs(run: Mapping[str, Any]) -> int:
    """The run's plain-NCE warm-up: its ``method.warmup_epochs`` column where the point set it, else the default of
    its method's options (0 for a method without one)."""
    method = run["method"]
    value = run.get(f"{method}.warmup_epochs")
    if _missing(value):
        value = getattr(METHODS[method].options_class(), "warmup_epochs", 0)
    return int(value)


def compact_remedies(results: pd.DataFrame) -> pd.DataFrame:
    """The :data:`REMEDY_COLUMNS` and option columns of an ``ablate`` results.csv of a remedies grid (a committed csv
    passes through), each run named by :func:`variant_name`, with its :func:`warmup_epochs`."""
    table = results.copy()
    records = table.to_dict("records")
    table["variant"] = [variant_name(r) for r in records]
    table["warmup_epochs"] = [warmup_epochs(r) for r in records]
    return table[[c for c in (*REMEDY_COLUMNS, *_option_columns(table)) if c in table]]


def _finished(table: pd.DataFrame) -> pd.DataFrame:
    done = compact_remedies(table)
    return done[done["status"] == "finished"] if "status" in done else done


def _is_twin(table: pd.DataFrame) -> pd.Series:
    return table["variant"] == NCE


def _gains_by_seed(done: pd.DataFrame, bias: float, variant: str, metric: str) -> dict[int, float]:
    here = done[done[SETTING] == bias]
    twins = here[_is_twin(here)].set_index(SEED)[metric]
    runs = here[here["variant"] == variant].set_index(SEED)[metric]
    return {int(s): float(runs[s] - twins[s]) for s in runs.index if s in twins.index}


def recovered_share(gains: Mapping[int, float], oracle: Mapping[int, float], *,
                    resamples: int = BOOTSTRAP) -> tuple[float, float, float, int]:
    """``(share, low, high, n)``: the mean gain over the mean oracle-mask gain on the ``n`` seeds both have, with its
    percentile bootstrap interval (NaN below two seeds, or when the oracle's mean gain is 0)."""
    seeds = sorted(set(gains) & set(oracle))
    if not seeds:
        return math.nan, math.nan, math.nan, 0
    g, o = np.array([gains[s] for s in seeds]), np.array([oracle[s] for s in seeds])
    share = float(g.mean() / o.mean()) if o.mean() != 0 else math.nan
    if len(seeds) < 2 or math.isnan(share):
        return share, math.nan, math.nan, len(seeds)
    draws = np.random.default_rng(0).integers(0, len(seeds), size=(resamples, len(seeds)))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = g[draws].mean(axis=1) / o[draws].mean(axis=1)
    low, high = np.nanpercentile(ratios, [2.5, 97.5])
    return share, float(low), float(high), len(seeds)


def paired_gains(table: pd.DataFrame, metric: str = "ap50") -> pd.DataFrame:
    """One row per ``class_bias_p`` and variant other than the NCE twin: ``n`` pairs, both means, the mean gain
    with its 95 % interval, the gains by seed, and the share of the oracle mask's gain recovered (with interval)."""
    done = _finished(table)
    rows = []
    for (bias, variant), group in done[~_is_twin(done)].groupby([SETTING, "variant"], sort=False):
        gains = _gains_by_seed(done, bias, variant, metric)
        if not gains:
            continue
        twins = done[_is_twin(done) & (done[SETTING] == bias)].set_index(SEED)[metric]
        mean, low, high = t_interval(list(gains.values()))
        share = recovered_share(gains, _gains_by_seed(done, bias, ORACLE_MASK, metric))
        rows.append({SETTING: bias, "variant": variant, "n": len(gains),
                     "NCE": float(np.mean([twins[s] for s in gains])),
                     "variant_score": float(group.set_index(SEED)[metric].loc[list(gains)].mean()),
                     "gain": mean, "low": low, "high": high, "seeds": ",".join(map(str, gains)),
                     "gains": ",".join(f"{g:+.3f}" for g in gains.values()),
                     "recovered": share[0], "recovered_low": share[1], "recovered_high": share[2]})
    return pd.DataFrame(rows)


def twin_mismatches(table: pd.DataFrame, epochs: pd.DataFrame) -> list[str]:
    """Runs that train plain NCE in their warm-up of ``W`` epochs but whose ``warmup_nce`` (their NCE loss in epoch
    ``W``) differs from their twin's NCE loss in epoch ``W`` (``epochs``: :func:`epoch_records`)."""
    done = _finished(table)
    twin_nce = epochs[epochs["variant"] == NCE].set_index([SETTING, SEED, "epoch"])["nce"]
    out = []
    for run in done[~_is_twin(done) & (done["variant"] != ORACLE_MASK)].to_dict("records"):
        key = (run[SETTING], run[SEED], run["warmup_epochs"])
        if run["warmup_epochs"] > 0 and key in twin_nce.index and run["warmup_nce"] != twin_nce.loc[key]:
            out.append(f"{run['variant']} ({SETTING} {run[SETTING]:g}, seed {int(run[SEED])}): warm-up NCE "
                       f"{run['warmup_nce']!r} against its twin's {float(twin_nce.loc[key])!r}")
    return out


def chosen_knobs(table: pd.DataFrame, metric: str = "val_ap50") -> dict[str, str]:
    """For each remedy method, the variant with the best seed-mean ``metric`` (a validation score), ties to the
    variant that comes first in the table (the grid's order)."""
    done = _finished(table)
    done = done[~done["method"].isin([BASELINE])]
    means = done.groupby(["method", "variant"], sort=False)[metric].mean()
    return {method: str(group.idxmax()[1]) for method, group in means.groupby(level=0, sort=False)}


def _interval(low: float, high: float) -> str:
    return "" if math.isnan(low) else f" [{low:+.3f}, {high:+.3f}]"


def remedies_markdown(gains: pd.DataFrame) -> str:
    """The table of :func:`paired_gains`: one row per class bias and variant."""
    lines = ["| `class_bias_p` | variant | seeds | NCE AP50 | variant AP50 | gain (95 % CI) | gain by seed "
             "| share of the oracle mask's gain (95 % CI) |", "| --: | --- | --: | --: | --: | --- | --- | --- |"]
    for r in gains.to_dict("records"):
        marker = " **above 0**" if r["low"] > 0 else (" *below 0*" if r["high"] < 0 else "")
        share = "" if math.isnan(r["recovered"]) else f"{r['recovered']:+.2f}{_interval(r['recovered_low'], r['recovered_high'])}"
        lines.append(f"| {r[SETTING]:g} | {r['variant']} | {r['n']} | {r['NCE']:.3f} | {r['variant_score']:.3f} "
                     f"| {r['gain']:+.3f}{_interval(r['low'], r['high'])}{marker} | {r['gains'].replace(',', ', ')} "
                     f"| {share} |")
    return "\n".join(lines) + "\n"


def epoch_records(results: pd.DataFrame) -> pd.DataFrame:
    """:data:`EPOCH_COLUMNS` of every finished run of an ``ablate`` results.csv, from the ``metrics.jsonl`` of the
    configured run's folder inside each point's folder."""
    from ..analysis.runs import configured_run_folder

    table = compact_remedies(results).join(results[["folder"]])
    rows = []
    for run in table[table["status"] == "finished"].to_dict("records"):
        for line in (configured_run_folder(run["folder"]) / "metrics.jsonl").read_text().splitlines():
            record = json.loads(line)
            rows.append({**{k: run[k] for k in ("variant", SETTING, SEED)},
                         **{k: record.get(k) for k in EPOCH_COLUMNS if k not in ("variant", SETTING, SEED)}})
    return pd.DataFrame(rows, columns=list(EPOCH_COLUMNS))
