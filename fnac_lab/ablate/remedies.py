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
#: The columns of a compact remedies table, before each method's option columns (``method.option``); the detection
#: columns are the run's last epoch's (:func:`with_detection`).
REMEDY_COLUMNS = ("variant", "method", SETTING, SEED, "warmup_epochs", "ap50", "mean_ciou", "auc", "val_ap50", "best_epoch",
                  *EFFECT_FN_AUROC, "fn_auroc_cross", "warmup_nce", "fn_ratio", "fn_precision", "fn_recall",
                  "fn_detected_share", "train_seconds", "status")
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
    """One row per ``class_bias_p`` and variant other than the NCE twin: its method, ``n`` pairs, both means, the
    mean gain with its 95 % interval, the gains by seed, and the share of the oracle mask's gain recovered (with
    interval; NaN where the oracle mask's own gain interval does not lie above zero)."""
    done = _finished(table)
    rows = []
    for (bias, variant), group in done[~_is_twin(done)].groupby([SETTING, "variant"], sort=False):
        gains = _gains_by_seed(done, bias, variant, metric)
        if not gains:
            continue
        twins = done[_is_twin(done) & (done[SETTING] == bias)].set_index(SEED)[metric]
        mean, low, high = t_interval(list(gains.values()))
        oracle = _gains_by_seed(done, bias, ORACLE_MASK, metric)
        oracle_low = t_interval(list(oracle.values()))[1] if oracle else math.nan
        # a share of a gain that may be nothing says nothing: given where the oracle mask's interval is above 0
        share = recovered_share(gains, oracle) if oracle_low > 0 else (math.nan,) * 3
        rows.append({SETTING: bias, "variant": variant, "method": group["method"].iloc[0], "n": len(gains),
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
    """For each remedy method run with more than one knob, the variant with the best seed-mean ``metric`` (a
    validation score), ties to the variant that comes first in the table (the grid's order)."""
    done = _finished(table)
    done = done[~done["method"].isin([BASELINE])]
    means = done.groupby(["method", "variant"], sort=False)[metric].mean()
    return {method: str(group.idxmax()[1]) for method, group in means.groupby(level=0, sort=False) if len(group) > 1}


def _interval(low: float, high: float, digits: int = 3) -> str:
    return "" if math.isnan(low) else f" [{low:+.{digits}f}, {high:+.{digits}f}]"


def remedies_markdown(gains: pd.DataFrame) -> str:
    """The table of :func:`paired_gains`: one row per class bias and variant."""
    lines = ["| `class_bias_p` | variant | seeds | NCE AP50 | variant AP50 | gain (95 % CI) | gain by seed "
             "| share of the oracle mask's gain (95 % CI) |", "| --: | --- | --: | --: | --: | --- | --- | --- |"]
    for r in gains.to_dict("records"):
        marker = " **above 0**" if r["low"] > 0 else (" *below 0*" if r["high"] < 0 else "")
        share = ("" if math.isnan(r["recovered"]) else
                 f"{r['recovered']:+.2f}{_interval(r['recovered_low'], r['recovered_high'], 2)}")
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


#: The detection columns of the epochs table, and what each is (``same_class_share``: the share of the batches' pairs
#: that are same-class, the precision a random detection would have; computed, see :func:`detection_by_epoch`).
DETECTION = {"fn_precision": "precision", "fn_recall": "recall", "fn_detected_share": "share of pairs detected",
             "same_class_share": "share of pairs same-class"}
#: Seeds a main claim needs.
MAIN_SEEDS = 5


def detection_by_epoch(epochs: pd.DataFrame, class_bias_p: float) -> pd.DataFrame:
    """Per detecting variant and epoch at ``class_bias_p``: the mean over seeds of :data:`DETECTION` and the seeds
    ``n``. ``same_class_share`` follows from the other three, pooled over one run's epoch: with ``d`` detected,
    ``h`` of them same-class, ``s`` same-class and ``P`` pairs, ``d/P * (h/d) / (h/s) = s/P``."""
    epochs = epochs.reindex(columns=list(dict.fromkeys([*epochs.columns, *DETECTION])))  # absent: NaN
    here = epochs[(epochs[SETTING] == class_bias_p) & epochs["fn_precision"].notna()].copy()
    with np.errstate(divide="ignore", invalid="ignore"):
        here["same_class_share"] = here["fn_detected_share"] * here["fn_precision"] / here["fn_recall"]
    grouped = here.groupby(["variant", "epoch"], sort=False)
    out = grouped[list(DETECTION)].mean()
    out["n"] = grouped.size()
    return out.reset_index()


def validation_gaps(epochs: pd.DataFrame, class_bias_p: float) -> pd.DataFrame:
    """Per variant other than the NCE twin and epoch at ``class_bias_p``: its validation AP50 minus its twin's
    (same seed, same epoch), the mean over seeds with its 95 % interval, and ``n`` seeds: when in training a variant
    gains or loses."""
    here = epochs[epochs[SETTING] == class_bias_p]
    if "ap50" not in here:
        return pd.DataFrame(columns=["variant", "epoch", "gap", "low", "high", "n"])
    twin = here[here["variant"] == NCE].set_index([SEED, "epoch"])["ap50"]
    rows = []
    for (variant, epoch), group in here[here["variant"] != NCE].groupby(["variant", "epoch"], sort=False):
        gaps = [float(r.ap50 - twin[(r.seed, epoch)]) for r in group.itertuples() if (r.seed, epoch) in twin.index]
        if gaps:
            mean, low, high = t_interval(gaps)
            rows.append({"variant": variant, "epoch": int(epoch), "gap": mean, "low": low, "high": high,
                         "n": len(gaps)})
    return pd.DataFrame(rows, columns=["variant", "epoch", "gap", "low", "high", "n"])


def _label_free(gains: pd.DataFrame) -> pd.DataFrame:
    reads_labels = gains["method"].map(lambda m: METHODS[m].reads_labels)
    return gains[(gains["variant"] != ORACLE_MASK) & ~reads_labels]


def goal_verdicts(gains: pd.DataFrame, *, biased: float = 0.5, unbiased: float = 0.0) -> dict[str, str]:
    """For each label-free variant of :func:`paired_gains`: ``met`` when its gain interval at ``biased`` lies above
    zero over at least :data:`MAIN_SEEDS` seeds and its interval at ``unbiased`` (at least two seeds) does not lie
    below zero; ``not met`` when either fails; ``open`` when the seeds do not decide it yet."""
    free = _label_free(gains)
    out = {}
    for variant in dict.fromkeys(free["variant"]):
        rows = free[free["variant"] == variant].set_index(SETTING)
        at_biased = rows.loc[biased] if biased in rows.index else None
        at_unbiased = rows.loc[unbiased] if unbiased in rows.index else None
        if at_biased is not None and at_biased["high"] <= 0 or at_unbiased is not None and at_unbiased["high"] < 0:
            out[variant] = "not met"
        elif (at_biased is not None and at_biased["n"] >= MAIN_SEEDS and at_biased["low"] > 0
              and at_unbiased is not None and at_unbiased["n"] >= 2):
            out[variant] = "met"
        elif at_biased is not None and at_biased["n"] >= MAIN_SEEDS and not at_biased["low"] > 0:
            out[variant] = "not met"
        else:
            out[variant] = "open"
    return out


def _gain_text(row: Mapping[str, Any]) -> str:
    n = int(row["n"])
    return f"{row['gain']:+.3f}{_interval(row['low'], row['high'])} over {n} seed{'' if n == 1 else 's'}"


def _share_text(row: Mapping[str, Any]) -> str:
    if math.isnan(row["recovered"]):
        return "no share of the oracle mask's gain (no oracle runs of these seeds)"
    return f"{row['recovered']:.2f}{_interval(row['recovered_low'], row['recovered_high'], 2)} of the oracle mask's gain"


def remedies_statements(table: pd.DataFrame, epochs: pd.DataFrame, *, class_bias_p: float = 0.5,
                        unbiased: float = 0.0) -> list[str]:
    """What the remedies study shows, in sentences computed from ``table`` (its results) and ``epochs`` (their
    epochs): the twin check, the bounds, each label-free remedy's gain and share of the oracle mask's gain, its
    detection at the last epoch, when in training it falls behind its twin, and the verdict of the goal
    (:func:`goal_verdicts`)."""
    gains = paired_gains(table)
    done = _finished(table)
    checked = int((~_is_twin(done) & (done["variant"] != ORACLE_MASK) & (done["warmup_epochs"] > 0)).sum())
    mismatches = twin_mismatches(table, epochs)
    out = [f"Twins: {len(mismatches)} of the {checked} runs with a warm-up differ from their NCE twin's (first: "
           f"{mismatches[0]})." if mismatches else f"Twins: each of the {checked} runs with a warm-up trained it "
           f"exactly as its NCE twin (warm-up NCE equal to the last digit)."]
    bounds = gains[(gains[SETTING] == class_bias_p) & ~gains.index.isin(_label_free(gains).index)]
    for row in bounds.to_dict("records"):
        out.append(f"Bound with the labels, {row['variant']}, at class_bias_p {class_bias_p:g}: test AP50 gain over "
                   f"the NCE twin {_gain_text(row)}.")
    detection = detection_by_epoch(epochs, class_bias_p)
    gaps = validation_gaps(epochs, class_bias_p)
    for variant, row in _label_free(gains[gains[SETTING] == class_bias_p]).set_index("variant").iterrows():
        row = {**row, "variant": variant}
        other = gains[(gains[SETTING] == unbiased) & (gains["variant"] == variant)]
        line = f"{variant} at class_bias_p {class_bias_p:g}: {_gain_text(row)}, {_share_text(row)}"
        line += (f"; at class_bias_p {unbiased:g}: {_gain_text(other.iloc[0])}." if len(other)
                 else f"; not yet run at class_bias_p {unbiased:g}.")
        last = detection[detection["variant"] == variant].tail(1)
        if len(last):
            d = last.iloc[0]
            took = "" if math.isnan(d["fn_detected_share"]) else f" {d['fn_detected_share']:.1%} of the pairs taken,"
            chance = "" if math.isnan(d["same_class_share"]) else f" (a random pick: {d['same_class_share']:.2f})"
            line += (f" Its detection in the last epoch ({int(d['epoch'])}):{took} precision "
                     f"{d['fn_precision']:.2f}{chance}, recall {d['fn_recall']:.2f}.")
        own = gaps[gaps["variant"] == variant]
        if len(own) and row["gain"] < 0:
            first = own[own["gap"] < 0].head(1)
            if len(first):
                line += (f" Its validation AP50 first falls below the twin's in epoch {int(first['epoch'].iloc[0])} "
                         f"({first['gap'].iloc[0]:+.3f}, mean over seeds) and ends {own['gap'].iloc[-1]:+.3f}.")
        out.append(line)
    verdicts = goal_verdicts(gains, biased=class_bias_p, unbiased=unbiased)
    met = [v for v, s in verdicts.items() if s == "met"]
    still = [v for v, s in verdicts.items() if s == "open"]
    if met:
        out.append(f"Goal met (gain interval above zero over {MAIN_SEEDS} or more seeds at class_bias_p "
                   f"{class_bias_p:g}, not below zero at {unbiased:g}): {', '.join(met)}.")
    else:
        out.append(f"Goal met by no label-free remedy{' so far' if still else ''} (gain interval above zero over "
                   f"{MAIN_SEEDS} or more seeds at class_bias_p {class_bias_p:g}, not below zero at {unbiased:g})"
                   + (f"; still open, for want of seeds: {', '.join(still)}." if still else "."))
    return out


def detection_markdown(epochs: pd.DataFrame, class_bias_p: float) -> str:
    """The detecting remedies at ``class_bias_p``, per variant its last epoch's :func:`detection_by_epoch`: the
    share of pairs detected, precision (beside a random pick's), recall, and the seeds."""
    detection = detection_by_epoch(epochs, class_bias_p)
    lines = [f"| `class_bias_p` | variant | epoch | seeds | pairs detected | precision | random pick's precision "
             f"| recall |", "| --: | --- | --: | --: | --: | --: | --: | --: |"]
    for _, last in detection.groupby("variant", sort=False).tail(1).iterrows():
        share, chance = (("", "") if math.isnan(last["fn_detected_share"]) else
                         (f"{last['fn_detected_share']:.1%}", f"{last['same_class_share']:.2f}"))
        lines.append(f"| {class_bias_p:g} | {last['variant']} | {int(last['epoch'])} | {int(last['n'])} | {share} "
                     f"| {last['fn_precision']:.2f} | {chance} | {last['fn_recall']:.2f} |")
    return "\n".join(lines) + "\n"


def with_detection(table: pd.DataFrame, epochs: pd.DataFrame) -> pd.DataFrame:
    """:func:`compact_remedies` of ``table`` with each run's detection in its last epoch (``fn_precision``,
    ``fn_recall``, ``fn_detected_share`` from ``epochs``; empty for the runs that detect nothing)."""
    keys = ["variant", SETTING, SEED]
    columns = [c for c in ("fn_precision", "fn_recall", "fn_detected_share") if c in epochs]
    last = epochs.sort_values("epoch").groupby(keys, sort=False).tail(1)[keys + columns]
    compact = compact_remedies(table)
    merged = compact.drop(columns=[c for c in columns if c in compact]).merge(last, on=keys, how="left",
                                                                               validate="one_to_one")
    return merged[[c for c in (*REMEDY_COLUMNS, *_option_columns(merged)) if c in merged]]
