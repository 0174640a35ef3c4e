"""Why FNAC's remedy fails on the built-in data: the variants of ``data/grids/fnac_diagnosis.yaml`` paired with
their NCE twins, the twin check, and the gap decomposed into what the oracles say.

Each grid point is one run of ``notebooks/01_train.ipynb``. Its *variant* is named from its loss settings
(:func:`variant_name`): the NCE twin (all FNAC weights 0, the published NCE), NCE with the oracle false-negative
mask, FNAC with learned or class-label (oracle) targets, single terms, terms left out, and the target knobs. A
variant is paired with the NCE twin of the same ``class_bias_p`` and seed (same data, batches and
initialisation), and its gain is summarised as in :mod:`fnac_lab.ablate.effects`:

    gain_s = AP50(variant, seed s) - AP50(NCE twin, seed s),   mean +- t_{0.975, n-1} sd(gain) / sqrt(n)

A variant that keeps the published NCE trains exactly as its twin during the warm-up epochs; its
``warmup_nce`` (the NCE loss of the last warm-up epoch) must equal the twin's to the last digit
(:func:`twin_mismatches`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from ..methods import BASELINE, METHODS
from ..methods.fnac import FNAC_TERMS
from ..utils import FnacError
from .effects import EFFECT_FN_AUROC, SEED, t_interval

DIAGNOSIS_SETTING = ("class_bias_p",)
#: FNAC's weights as the grid and its results name them, with the term each weighs as variant names write it
#: (``FNS-audio only``), from FNAC's own term labels.
TERM_NAMES = {f"w_{term}": label.replace(" ", "-") for term, label in FNAC_TERMS.items()}
WEIGHTS = tuple(TERM_NAMES)
#: Loss settings a variant is made of, with the published value a missing column stands for.
VARIANT_DEFAULTS: dict[str, Any] = {"nce_fn_mask": "none", "fn_targets": "learned", "normalise_targets": False,
                                    "target_tau": math.nan}
#: The effect study's detection AUROCs and the cross-modal one.
DIAGNOSIS_FN_AUROC = (*EFFECT_FN_AUROC, "fn_auroc_cross")
#: The extended protocol's scores of a run's best checkpoint (:func:`extended_records`; empty where not scored).
EXTENDED = ("extended_ap", "max_f1", "precision")
#: The columns of ``data/results/fnac_diagnosis.csv``.
DIAGNOSIS_COLUMNS = ("variant", *DIAGNOSIS_SETTING, SEED, *VARIANT_DEFAULTS, *WEIGHTS, "ap50", "mean_ciou", "auc",
                     "best_epoch", *DIAGNOSIS_FN_AUROC, "warmup_nce", "fn_ratio", "train_seconds", "status", *EXTENDED,
                     "test_negatives")
#: Numeric columns every results table of the grid has (checked when one is read from a file).
NUMERIC_COLUMNS = (*DIAGNOSIS_SETTING, SEED, *WEIGHTS, "ap50", "warmup_nce")
#: The columns of ``data/results/fnac_diagnosis_epochs.csv`` (one row per run and epoch).
EPOCH_COLUMNS = ("variant", *DIAGNOSIS_SETTING, SEED, "epoch", "ap50", *DIAGNOSIS_FN_AUROC, "nce", "loss")
NCE, FNAC = METHODS[BASELINE].label, METHODS["fnac"].label
#: The three main contrasts beside the NCE twin, in the order the diagnosis page's decomposition reads them
#: (docs/findings/diagnosis.md).
ORACLE_MASK, ORACLE_TARGETS, LEARNED = f"{NCE} + oracle mask", f"{FNAC}, oracle targets", FNAC


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def variant_name(settings: Mapping[str, Any]) -> str:
    """A readable name of a run's loss: ``NCE``, ``NCE + oracle mask``, ``FNAC``, ``FNAC, oracle targets``,
    ``FNS-audio only``, ``FNAC without TNE``, ``FNAC, normalised targets``, ``FNAC, target tau 0.05``, ..."""
    s = {**VARIANT_DEFAULTS, **{k: v for k, v in settings.items() if not _missing(v)}}
    weights = {k: float(s[k]) for k in WEIGHTS}
    active = [k for k in WEIGHTS if weights[k] > 0]
    mask = " + oracle mask" if s["nce_fn_mask"] == "oracle" else ""
    if not active:
        return NCE + mask
    if len(active) == len(WEIGHTS):
        name = FNAC + mask
    elif len(active) == 1:
        name = f"{TERM_NAMES[active[0]]} only" + mask
    else:
        left_out = next(k for k in WEIGHTS if k not in active)
        name = f"{FNAC} without {TERM_NAMES[left_out]}" + mask
    if s["fn_targets"] == "oracle":
        name += ", oracle targets"
    if str(s["normalise_targets"]).lower() == "true":
        name += ", normalised targets"
    if not _missing(s["target_tau"]):
        name += f", target tau {float(s['target_tau']):g}"
    return name


def compact_diagnosis(results: pd.DataFrame) -> pd.DataFrame:
    """The :data:`DIAGNOSIS_COLUMNS` of an ``ablate`` results.csv of the diagnosis grid (a committed csv passes
    through): missing loss settings filled with their published values, and each run's variant name."""
    table = results.copy()
    for name, default in VARIANT_DEFAULTS.items():
        if name not in table:
            table[name] = default
        elif not _missing(default):
            table[name] = table[name].where(table[name].notna(), default)
    table["variant"] = [variant_name(r) for r in table.to_dict("records")]
    return table[[c for c in DIAGNOSIS_COLUMNS if c in table]]


def _finished(table: pd.DataFrame) -> pd.DataFrame:
    done = compact_diagnosis(table)
    return done[done["status"] == "finished"] if "status" in done else done


def _is_twin(table: pd.DataFrame) -> pd.Series:
    return (table["variant"] == NCE) & (table["nce_fn_mask"] == "none")


def paired_gains(table: pd.DataFrame, metric: str = "ap50") -> pd.DataFrame:
    """One row per ``class_bias_p`` and variant other than the NCE twin: the seeds paired with their twins, the
    mean gain in ``metric`` with its 95 % interval, both means, the gains by seed and the seed-mean final
    same-class AUROCs of variant and twin. Finished runs only; ``n`` counts the pairs."""
    done = _finished(table)
    twins = done[_is_twin(done)].set_index([*DIAGNOSIS_SETTING, SEED])
    rows = []
    for (bias, variant), group in done[~_is_twin(done)].groupby([*DIAGNOSIS_SETTING, "variant"], sort=False):
        pairs = [(run, twins.loc[(bias, run[SEED])]) for _, run in group.iterrows() if (bias, run[SEED]) in twins.index]
        if not pairs:
            continue
        gains = [v[metric] - n[metric] for v, n in pairs]
        mean, low, high = t_interval(gains)
        row = {"class_bias_p": bias, "variant": variant, "n": len(pairs),
               "NCE": float(np.mean([n[metric] for _, n in pairs])),
               "variant_score": float(np.mean([v[metric] for v, _ in pairs])), "gain": mean, "low": low, "high": high,
               "seeds": ",".join(str(int(v[SEED])) for v, _ in pairs),
               "gains": ",".join(f"{g:+.3f}" for g in gains)}
        for col in DIAGNOSIS_FN_AUROC:
            if col in done:
                row[f"{col} variant"] = float(np.mean([v[col] for v, _ in pairs]))
                row[f"{col} NCE"] = float(np.mean([n[col] for _, n in pairs]))
        rows.append(row)
    return pd.DataFrame(rows)


def twin_mismatches(table: pd.DataFrame) -> list[str]:
    """Runs that keep the published NCE but whose ``warmup_nce`` differs from their twin's (empty: twins are twins)."""
    done = _finished(table)
    twins = done[_is_twin(done)].set_index([*DIAGNOSIS_SETTING, SEED])["warmup_nce"]
    out = []
    for _, run in done[~_is_twin(done) & (done["nce_fn_mask"] == "none")].iterrows():
        key = (run["class_bias_p"], run[SEED])
        if key in twins.index and run["warmup_nce"] != twins.loc[key]:
            out.append(f"{run['variant']} (class_bias_p {run['class_bias_p']:g}, seed {int(run[SEED])}): warm-up NCE "
                       f"{run['warmup_nce']!r} against its twin's {twins.loc[key]!r}")
    return out


def decomposition(gains: pd.DataFrame, class_bias_p: float = 0.5) -> dict[str, dict[str, float]]:
    """The gap in three numbers at ``class_bias_p``: the oracle-mask gain (what false-negative handling can fix
    here), the oracle-target gain (FNAC's loss form given perfect targets) and the learned-target gain (FNAC as
    published), each as ``{gain, low, high, n}``; a contrast not yet run is left out."""
    rows = gains[gains["class_bias_p"] == class_bias_p].set_index("variant")
    return {key: {k: float(rows.loc[name, k]) for k in ("gain", "low", "high", "n")}
            for key, name in (("oracle_mask", ORACLE_MASK), ("oracle_targets", ORACLE_TARGETS), ("learned", LEARNED))
            if name in rows.index}


def _interval(r: Mapping[str, Any]) -> str:
    interval = "" if math.isnan(r["low"]) else f" [{r['low']:+.3f}, {r['high']:+.3f}]"
    marker = " **above 0**" if r["low"] > 0 else (" *below 0*" if r["high"] < 0 else "")
    return f"{r['gain']:+.3f}{interval}{marker}"


def diagnosis_markdown(gains: pd.DataFrame, *, by_seed: bool = True) -> str:
    """The diagnosis page's table of :func:`paired_gains`: one row per class bias and variant; without ``by_seed`` the
    gains seed by seed are left out (narrow enough for a notebook's output area; its figure's hover has them)."""
    seed_head, seed_rule = (" gain by seed |", " --- |") if by_seed else ("", "")
    lines = [f"| `class_bias_p` | variant | seeds | NCE AP50 | variant AP50 | gain (95 % CI) |{seed_head}"
             " AUROC audio | AUROC visual | AUROC cross-modal |",
             f"| --: | --- | --: | --: | --: | --- |{seed_rule} --: | --: | --: |"]
    for r in gains.to_dict("records"):
        def pair(name: str) -> str:
            v, n = r.get(f"fn_auroc_{name} variant"), r.get(f"fn_auroc_{name} NCE")
            return "" if v is None or math.isnan(v) else f"{v:.3f} / {n:.3f}"

        by = f" {r['gains'].replace(',', ', ')} |" if by_seed else ""
        lines.append(f"| {r['class_bias_p']:g} | {r['variant']} | {r['n']} | {r['NCE']:.3f} | {r['variant_score']:.3f} "
                     f"| {_interval(r)} |{by} {pair('audio')} | {pair('visual')} | {pair('cross')} |")
    return "\n".join(lines) + "\n"


def epoch_records(results: pd.DataFrame) -> pd.DataFrame:
    """:data:`EPOCH_COLUMNS` of every finished run of an ``ablate`` results.csv, read from the ``metrics.jsonl``
    of the configured run's training folder inside each point's folder
    (:func:`~fnac_lab.analysis.configured_run_folder`)."""
    from ..analysis.runs import configured_run_folder

    table = compact_diagnosis(results).join(results[["folder"]])
    rows = []
    for run in table[table["status"] == "finished"].to_dict("records"):
        path = configured_run_folder(run["folder"]) / "metrics.jsonl"
        for line in path.read_text().splitlines():
            record = json.loads(line)
            rows.append({**{k: run[k] for k in ("variant", *DIAGNOSIS_SETTING, SEED)},
                         **{k: record.get(k, math.nan) for k in EPOCH_COLUMNS
                            if k not in ("variant", *DIAGNOSIS_SETTING, SEED)}})
    return pd.DataFrame(rows, columns=list(EPOCH_COLUMNS))


def contrast(table: pd.DataFrame, variant: str, reference: str, *, class_bias_p: float = 0.5,
             metric: str = "ap50") -> dict[str, float] | None:
    """``variant`` minus ``reference`` paired by seed at ``class_bias_p``: ``{gain, low, high, n}`` (None without
    a common finished seed)."""
    done = _finished(table)
    done = done[done["class_bias_p"] == class_bias_p]
    a, b = (done[done["variant"] == v].set_index(SEED)[metric] for v in (variant, reference))
    seeds = sorted(set(a.index) & set(b.index))
    if not seeds:
        return None
    mean, low, high = t_interval([a[s] - b[s] for s in seeds])
    return {"gain": mean, "low": low, "high": high, "n": len(seeds)}


def _verdict(d: Mapping[str, float]) -> str:
    if math.isnan(d["low"]):
        return "one seed only, no interval"
    if d["low"] > 0:
        return "above zero"
    return "below zero" if d["high"] < 0 else "the interval holds zero"


def _figure(d: Mapping[str, float]) -> str:
    interval = "" if math.isnan(d["low"]) else f" [{d['low']:+.3f}, {d['high']:+.3f}]"
    return f"{d['gain']:+.3f}{interval} over {int(d['n'])} seeds ({_verdict(d)})"


def diagnosis_statements(table: pd.DataFrame, *, class_bias_p: float = 0.5) -> list[str]:
    """The gap in sentences computed from ``table`` (a results table of the grid): each main contrast against the
    NCE twin, then where FNAC loses it, in its targets (oracle targets minus learned targets) or in its loss form
    (oracle targets against the twin, and against the oracle mask)."""
    gains = paired_gains(table)
    parts = decomposition(gains, class_bias_p)
    names = {"oracle_mask": "NCE with the oracle false-negative mask (what false-negative handling can fix here)",
             "oracle_targets": "FNAC's loss with class-label targets (its loss form given perfect targets)",
             "learned": "FNAC as published (learned targets)"}
    out = [f"At class_bias_p {class_bias_p:g}, test AP50 gain over the NCE twin of {names[k]}: {_figure(d)}."
           for k, d in parts.items()]
    targets = contrast(table, ORACLE_TARGETS, LEARNED, class_bias_p=class_bias_p)
    form = contrast(table, ORACLE_TARGETS, ORACLE_MASK, class_bias_p=class_bias_p)
    if targets is not None:
        out.append(f"Perfect targets in place of the learned ones (oracle targets minus learned): {_figure(targets)}.")
    if form is not None:
        out.append(f"FNAC's loss form with perfect targets against false-negative elimination with the same "
                   f"knowledge (oracle targets minus oracle mask): {_figure(form)}.")
    return out


def extended_records(results: pd.DataFrame, *, test_negatives: float = 0.5, progress: bool = True) -> pd.DataFrame:
    """``results`` (an ``ablate`` results.csv) with each finished run's best checkpoint scored on the extended
    protocol: its built-in test split plus ``test_negatives`` silent and off-screen clips per test clip
    (:func:`fnac_lab.scoring.evaluate_with_negatives`), in the :data:`EXTENDED` columns. The runs were trained
    without negatives; their cIoU scores are untouched."""
    from tqdm.auto import tqdm

    from ..analysis.runs import configured_run_folder
    from ..checkpoint import load_checkpoint
    from ..datasets import NEGATIVES_SPLIT, build_datasets
    from ..scoring import evaluate_with_negatives

    table = results.copy()
    for col in (*EXTENDED, "test_negatives"):
        table[col] = np.nan
    splits: dict[str, dict[str, Any]] = {}
    rows = table.index[table["status"] == "finished"]
    for i in tqdm(rows, desc="extended protocol", disable=not progress):
        model, cfg, _ = load_checkpoint(configured_run_folder(table.at[i, "folder"]) / "checkpoints" / "best.pt")
        data = cfg.replace(n_train=cfg.batch_size, n_val=1, test_negatives=test_negatives)  # only the test split
        key = json.dumps({k: v for k, v in data.to_dict().items() if k in ("data_seed", "n_classes", "n_unheard",
                          "n_scenes", "n_test", "image_size", "test_negatives")}, sort_keys=True)
        if key not in splits:
            splits[key] = build_datasets(data)
        result = evaluate_with_negatives(model, splits[key]["test"], splits[key][NEGATIVES_SPLIT],
                                         batch_size=cfg.eval_batch_size, progress=False)
        if not math.isclose(result.scores["ap50"], table.at[i, "ap50"], abs_tol=1e-9):
            raise FnacError(f"{table.at[i, 'folder']}: its best checkpoint scores test AP50 {result.scores['ap50']} "
                            f"now, not the run's {table.at[i, 'ap50']}: the test split is not the one it was scored on")
        for col in EXTENDED:
            table.at[i, col] = result.scores[col]
        table.at[i, "test_negatives"] = test_negatives
    return table


def extended_markdown(table: pd.DataFrame) -> str:
    """The extended protocol's table: per class bias and variant, the paired gain over the NCE twin in extended AP,
    max-F1 and precision at confidence 0.5 (runs scored by :func:`extended_records` only)."""
    scored = table[table["extended_ap"].notna()] if "extended_ap" in table else table.iloc[:0]
    lines = ["| `class_bias_p` | variant | seeds | NCE extended AP | variant extended AP | extended AP gain (95 % CI) "
             "| max-F1 gain (95 % CI) | precision gain (95 % CI) |", "| --: | --- | --: | --: | --: | --- | --- | --- |"]
    gains = {m: paired_gains(scored, metric=m) for m in EXTENDED}
    if gains["extended_ap"].empty:
        return "\n".join(lines) + "\n"
    gains = {m: g.set_index(["class_bias_p", "variant"]) for m, g in gains.items()}
    for (bias, variant), r in gains["extended_ap"].iterrows():
        f1, prec = gains["max_f1"].loc[(bias, variant)], gains["precision"].loc[(bias, variant)]
        lines.append(f"| {bias:g} | {variant} | {r['n']} | {r['NCE']:.3f} | {r['variant_score']:.3f} | {_interval(r)} "
                     f"| {_interval(f1)} | {_interval(prec)} |")
    return "\n".join(lines) + "\n"
