"""The report of a training run against its NCE-only twin: final scores, the gain and its noise, the scores
table and "what this run shows" in sentences computed from the numbers."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from ..config import TrainConfig
from ..metrics import EXTENDED_SCORES
from ..paper import FN_RATIO
from ..utils import atomic_write_text, write_json

SCORES = ("ap50", "mean_ciou", "auc")
#: Column names of the scores table, the extended protocol's last (present when the test split has negatives).
COLUMNS = {"ap50": "AP50", "mean_ciou": "mean cIoU", "auc": "AUC", "extended_ap": "extended AP", "max_f1": "max-F1",
           "precision": "precision"}


def read_history(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


#: The key under which summaries written by earlier versions keep the reference maps' scores.
EARLIER_REFERENCE_MAPS_KEY = "baselines"


def run_metrics(run_dir: str | Path, split: str = "test", *, warmup_epochs: int | None = None) -> dict[str, Any]:
    """Final scores of a finished training run (from ``summary.json`` and ``metrics.jsonl``): the test
    ``ap50``, ``mean_ciou``, ``auc``, ``n_samples`` of the best validation epoch (and, when the test split has
    negatives, the extended protocol's ``extended_ap``, ``max_f1``, ``precision`` and ``n_negatives``), plus the
    run's facts. ``warmup_nce`` is the NCE loss after ``warmup_epochs`` epochs (default: the run's own warm-up; an NCE
    twin is given its partner's)."""
    run_dir = Path(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    history = read_history(run_dir)
    test = summary[split]
    ratios = [r["fn_ratio"] for r in history if r.get("fn_ratio") is not None]
    warmup = warmup_epochs
    if warmup is None:
        cfg = TrainConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
        warmup = cfg.build_method().warmup_epochs
    return {
        **{k: test[k] for k in (*SCORES, "n_samples")},
        **{k: test[k] for k in (*EXTENDED_SCORES, "n_negatives") if k in test},
        **{k: v for k, v in history[-1].items() if k.startswith("fn_auroc_")},  # at the last epoch
        "best_epoch": summary["best_epoch"],
        "epochs_trained": summary["epochs_trained"],
        "val": summary["val"],
        "fn_ratio": float(np.mean(ratios)) if ratios else None,
        "train_seconds": round(sum(r.get("train_seconds", 0.0) for r in history), 1),
        # the NCE loss of the last warm-up epoch, in full: a run and its NCE twin must agree to the last digit
        "warmup_nce": history[min(warmup, len(history)) - 1]["nce"] if warmup else None,
        "val_ap50_by_epoch": [r["ap50"] for r in history],
        "reference_maps": test["reference_maps" if "reference_maps" in test else EARLIER_REFERENCE_MAPS_KEY],
    }


def ap50_noise(run: Mapping[str, Any], nce: Mapping[str, Any], *, tail: int = 3) -> dict[str, float]:
    """Noise of the AP50 difference of two single-seed runs, from two sources (the larger is used):

    - ``test_se``: binomial standard error of the difference, ``sqrt(p1 (1 - p1) / n + p2 (1 - p2) / n)``;
    - ``epoch_jitter``: ``sqrt(s1^2 + s2^2)``, ``s`` the standard deviation (ddof 1) of a run's validation
      AP50 over its last ``tail`` epochs, a stand-in for how much a rerun with another seed moves.
    """
    n = run["n_samples"]
    test_se = math.sqrt(sum(r["ap50"] * (1 - r["ap50"]) / n for r in (run, nce)))
    tails = [r["val_ap50_by_epoch"][-tail:] for r in (run, nce)]
    jitter = math.sqrt(sum(float(np.std(t, ddof=1)) ** 2 for t in tails)) if all(len(t) >= 2 for t in tails) else 0.0
    return {"test_se": test_se, "epoch_jitter": jitter, "noise": max(test_se, jitter)}


def compare_to_baseline(method_runs: Sequence[Mapping[str, Any]], nce_runs: Sequence[Mapping[str, Any]]
                        ) -> dict[str, Any]:
    """A method's gain over its NCE twin (paired by seed) and whether it exceeds the noise.

    With several seeds the noise is the standard error of the mean per-seed gain (standard deviation of the
    gains, ddof 1, over sqrt(n)); with one seed it is :func:`ap50_noise`. The gain counts as shown when it
    exceeds twice the noise.
    """
    if len(method_runs) != len(nce_runs) or not method_runs:
        raise ValueError("need one NCE run per run of the method")
    gains = {k: [f[k] - b[k] for f, b in zip(method_runs, nce_runs)] for k in SCORES}
    out: dict[str, Any] = {"n_seeds": len(method_runs), **{k: float(np.mean(v)) for k, v in gains.items()},
                           "ap50_per_seed": gains["ap50"]}
    if len(method_runs) > 1:
        out["noise"] = float(np.std(gains["ap50"], ddof=1) / math.sqrt(len(method_runs)))
        out["noise_source"] = f"the standard error of the mean AP50 gain over {len(method_runs)} seeds"
    else:
        parts = ap50_noise(method_runs[0], nce_runs[0])
        out["noise"] = parts["noise"]
        out["noise_source"] = ("the binomial standard error of the AP50 difference on the test split"
                               if parts["test_se"] >= parts["epoch_jitter"] else
                               "the epoch-to-epoch spread of validation AP50 over the last epochs, one seed")
        out.update({k: parts[k] for k in ("test_se", "epoch_jitter")})
    out["exceeds_noise"] = bool(out["ap50"] > 2 * out["noise"])
    return out


def scores_of(run: Mapping[str, Any]) -> tuple[str, ...]:
    """The scores a run's report carries: AP50, mean cIoU and AUC, and the extended protocol's when it has them."""
    return SCORES + (EXTENDED_SCORES if all(k in run for k in EXTENDED_SCORES) else ())


def run_report(cfg: TrainConfig, method_runs: Sequence[Mapping[str, Any]], nce_runs: Sequence[Mapping[str, Any]] | None
               ) -> dict[str, Any]:
    """The content of ``metrics.json``: the first seed's final scores at top level, the NCE twin under
    ``baseline``, the reference-map levels under ``reference_maps``, the comparison under ``gain``, all seeds under
    ``seeds``, and the configuration."""
    first = dict(method_runs[0])
    report: dict[str, Any] = {k: v for k, v in first.items() if k != "reference_maps"}
    method = cfg.build_method()
    report["method_label"] = None if method.trains_nce_only(cfg.epochs) else method.label
    report["reference_maps"] = first["reference_maps"]
    if nce_runs:
        report["baseline"] = {k: v for k, v in nce_runs[0].items() if k != "reference_maps"}
        report["gain"] = compare_to_baseline(method_runs, nce_runs)
    scores = scores_of(first)
    report["seeds"] = [{"seed": cfg.seed + i, **{k: r[k] for k in scores},
                        **({"baseline": {k: nce_runs[i][k] for k in scores}} if nce_runs else {})}
                       for i, r in enumerate(method_runs)]
    report["config"] = cfg.to_dict()
    return report


def scores_table(report: Mapping[str, Any]) -> pd.DataFrame:
    """AP50 / mean cIoU / AUC of the run, its NCE twin and the reference maps (rows), from a :func:`run_report`; when
    the test split has negatives also the extended protocol's AP, max-F1 and precision (the oracle has none: NaN).
    With several seeds the run rows are seed means."""
    scores = scores_of(report["seeds"][0])

    def mean_over_seeds(key: str | None) -> dict[str, float]:
        runs = [s[key] if key else s for s in report["seeds"]]
        return {k: float(np.mean([r[k] for r in runs])) for k in scores}

    rows = {report["method_label"] or "configured run (NCE only)": mean_over_seeds(None)}
    if "baseline" in report:
        rows["NCE baseline"] = mean_over_seeds("baseline")
    names = {"centre_prior": "centre prior", "random": "random map", "oracle": "oracle (gt-derived)"}
    for key, label in names.items():
        rows[label] = {k: report["reference_maps"][key].get(k, math.nan) for k in scores}
    table = pd.DataFrame(rows).T[list(scores)]
    table.columns = [COLUMNS[k] for k in scores]
    return table


def write_report(out_dir: str | Path, report: Mapping[str, Any]) -> pd.DataFrame:
    """Write ``metrics.json`` and ``scores.md`` (the :func:`scores_table` as markdown) into ``out_dir``."""
    out = Path(out_dir)
    write_json(out / "metrics.json", report)
    table = scores_table(report)
    n = report["n_samples"]
    seeds = len(report["seeds"])
    note = f"Test split, {n} samples" + (f", mean over {seeds} seeds" if seeds > 1 else "") + "."
    if "n_negatives" in report:
        note += (f" Extended protocol (SLAVC): the {n} test samples and {report['n_negatives']} negatives (silent and "
                 f"off-screen clips); AP50, mean cIoU and AUC over the {n} test samples alone.")
    shown = table.astype(object).where(table.notna(), None) if table.isna().any().any() else table
    atomic_write_text(out / "scores.md", shown.to_markdown(floatfmt=".3f", missingval="n/a") + f"\n\n{note}\n")
    return table


def _against_centre_prior(report: Mapping[str, Any]) -> str:
    """Which models beat the centre prior on which score, in one sentence."""
    names = {"ap50": "AP50", "mean_ciou": "mean cIoU", "auc": "AUC"}
    centre = report["reference_maps"]["centre_prior"]
    runs = {report["method_label"] or "the configured run": report}
    if "baseline" in report:
        runs["the NCE baseline"] = report["baseline"]
    level = ", ".join(f"{names[k]} {centre[k]:.3f}" for k in SCORES)
    parts = []
    for name, run in runs.items():
        above = [names[k] for k in SCORES if run[k] > centre[k]]
        below = [names[k] for k in SCORES if run[k] <= centre[k]]
        if not below:
            parts.append(f"{name} beats it on every score")
        elif not above:
            parts.append(f"{name} beats it on none (its maps carry no more localisation than a centred blob)")
        else:
            parts.append(f"{name} beats it on {' and '.join(above)} but not on {' and '.join(below)}")
    return f"Against the centre prior ({level}): " + "; ".join(parts) + "."


def _extended_line(report: Mapping[str, Any]) -> str:
    """The extended protocol's scores of the run, its twin and the reference maps, in one sentence."""
    def scores(r: Mapping[str, Any]) -> str:
        return f"AP {r['extended_ap']:.3f}, max-F1 {r['max_f1']:.3f}, precision {r['precision']:.3f}"

    name = report["method_label"] or "The configured run"
    twin = f"; the NCE twin {scores(report['baseline'])}" if "baseline" in report else ""
    reference = report["reference_maps"]
    return (f"With the {report['n_negatives']} negatives beside the {report['n_samples']} test samples (extended "
            f"protocol), {name} reached {scores(report)}{twin}; the centre prior reaches "
            f"{scores(reference['centre_prior'])}, the random map {scores(reference['random'])}.")


def what_this_run_shows(report: Mapping[str, Any]) -> list[str]:
    """Plain statements computed from a :func:`run_report` (markdown bullet texts)."""
    cfg = report["config"]
    reference = report["reference_maps"]
    lines = []
    name = report["method_label"] or "The configured run (NCE only)"
    lines.append(f"{name} reached test AP50 **{report['ap50']:.3f}** (mean cIoU {report['mean_ciou']:.3f}, "
                 f"AUC {report['auc']:.3f}) on {report['n_samples']} test samples, with the checkpoint of validation "
                 f"epoch {report['best_epoch']} of {report['epochs_trained']}.")
    if "baseline" in report:
        base, gain = report["baseline"], report["gain"]
        label = report["method_label"] or "the configured run"
        verdict = (f"exceeds twice the noise estimate: on this run {label} beats the NCE baseline beyond noise"
                   if gain["exceeds_noise"] else
                   f"does not exceed twice the noise estimate: this run does not show a difference between {label} "
                   "and the NCE baseline beyond noise")
        seeds = f" (mean over {gain['n_seeds']} seeds)" if gain["n_seeds"] > 1 else ""
        lines.append(f"The NCE-only twin reached AP50 **{base['ap50']:.3f}**; {label}'s AP50 gain{seeds} is "
                     f"**{gain['ap50']:+.3f}** against a noise estimate of {gain['noise']:.3f} from {gain['noise_source']}; "
                     f"the gain {verdict}.")
    lines.append(_against_centre_prior(report))
    lines.append(f"Random maps score AP50 {reference['random']['ap50']:.3f} and the gt-derived oracle "
                 f"{reference['oracle']['ap50']:.3f} (the ceiling under the median threshold).")
    if "n_negatives" in report:
        lines.append(_extended_line(report))
    curve = report["val_ap50_by_epoch"]
    w = TrainConfig.from_dict(cfg).build_method().warmup_epochs
    if report["method_label"] and w < len(curve):
        start = f"{curve[w - 1]:.3f} at the end of the {w}-epoch NCE warm-up" if w > 0 else "the start (no warm-up)"
        terms = f"{report['method_label']}'s terms"
        lines.append(f"Once {terms} joined, validation AP50 went from {start} to at best {max(curve[w:]):.3f} and "
                     f"{curve[-1]:.3f} at the last epoch" + _collapse_clause(curve, report.get("baseline"), w, terms))
        base = report.get("baseline")
        if w > 0 and report["best_epoch"] <= w and base and base["best_epoch"] <= w:
            lines.append(f"Both selected checkpoints come from the NCE warm-up (epochs {report['best_epoch']} and "
                         f"{base['best_epoch']} of {w}), where the run and its twin train the same network: the "
                         f"scores above compare NCE with itself, not {report['method_label']} with NCE.")
    if report.get("fn_ratio") is not None:
        lines.append(f"Training batches of {cfg['batch_size']} had a false-negative ratio of {100 * report['fn_ratio']:.1f} % "
                     f"on average (the paper's VGG-Sound batches: {100 * FN_RATIO[128]:.2f} % at 128, "
                     f"{100 * FN_RATIO[256]:.2f} % at 256).")
    return lines


def _collapsed(curve: list[float], warmup: int) -> bool:
    """Whether validation AP50 after the warm-up stays below half its best during the warm-up."""
    return warmup > 0 and max(curve[warmup:]) < 0.5 * max(curve[:warmup])


def _collapse_clause(curve: list[float], baseline: dict[str, Any] | None, warmup: int, terms: str) -> str:
    """How a fall after the warm-up reads beside the NCE twin's curve over the same epochs: the terms' doing only
    when the twin did not fall as well; without a twin, a fall and no cause."""
    if not _collapsed(curve, warmup):
        return "."
    twin = baseline.get("val_ap50_by_epoch") if baseline else None
    if not twin or len(twin) <= warmup:
        return ": a collapse after the warm-up (no NCE twin was trained to tell whether the terms caused it)."
    if _collapsed(twin, warmup):
        return (f"; the NCE twin fell as well, to at best {max(twin[warmup:]):.3f}: a collapse of the training "
                f"itself, not of {terms}.")
    return (f": a collapse, while the NCE twin reached {max(twin[warmup:]):.3f} over the same epochs: "
            f"{terms} destroyed what the warm-up had learned.")
