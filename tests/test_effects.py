"""Paired FNAC-over-twin effects: the interval against scipy, the pairing against a loop over seeds, and the
findings page's table (docs/findings/effect-study.md) against the committed results file."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from fnac_lab.ablate.effects import effects_markdown, paired_effects, t_interval

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "data" / "results" / "fnac_effect.csv"


def test_t_interval_matches_scipy():
    x = [0.03, -0.01, 0.05, 0.02]
    mean, low, high = t_interval(x)
    ref = scipy.stats.t.interval(0.95, len(x) - 1, loc=np.mean(x), scale=scipy.stats.sem(x))
    assert mean == pytest.approx(np.mean(x))
    assert (low, high) == pytest.approx(ref)
    one = t_interval([0.1])
    assert one[0] == 0.1 and math.isnan(one[1]) and math.isnan(one[2])


def synthetic_results() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for pre, p, seed, s in itertools.product([None, "demo"], [0.0, 0.5], [0, 1, 2], [0.0, 0.4, 1.6]):
        rows.append(dict(visual_pretrain=pre, class_bias_p=p, batch_size=64, fnac_strength=s, seed=seed,
                         ap50=rng.uniform(0.2, 0.8), fn_auroc_audio=rng.uniform(0.5, 1),
                         fn_auroc_visual=rng.uniform(0.5, 1), fn_auroc_foreground=rng.uniform(0.5, 1),
                         status="finished"))
    table = pd.DataFrame(rows)
    # one FNAC run failed and one twin is missing: those seeds drop out of their pairs
    table.loc[(table.visual_pretrain == "demo") & (table.class_bias_p == 0.5) & (table.seed == 1)
              & (table.fnac_strength == 0.4), "status"] = "failed"
    return table.drop(table[(table.visual_pretrain.isna()) & (table.class_bias_p == 0.0) & (table.seed == 2)
                            & (table.fnac_strength == 0.0)].index)


def test_paired_effects_against_a_loop_over_seeds():
    results = synthetic_results()
    effects = paired_effects(results)
    assert len(effects) == 8
    for _, row in effects.iterrows():
        pre = None if row.visual_pretrain == "scratch" else row.visual_pretrain
        gains, fn_audio = [], []
        for seed in range(3):
            def pick(strength):
                hit = results[(results.visual_pretrain.isna() if pre is None else results.visual_pretrain == pre)
                              & (results.class_bias_p == row.class_bias_p) & (results.seed == seed)
                              & (results.fnac_strength == strength) & (results.status == "finished")]
                return hit.iloc[0] if len(hit) else None
            fnac, twin = pick(row.fnac_strength), pick(0.0)
            if fnac is not None and twin is not None:
                gains.append(fnac.ap50 - twin.ap50)
                fn_audio.append(fnac.fn_auroc_audio)
        assert row.n == len(gains)
        assert row.gain == pytest.approx(np.mean(gains))
        low, high = scipy.stats.t.interval(0.95, len(gains) - 1, loc=np.mean(gains), scale=scipy.stats.sem(gains))
        assert (row.low, row.high) == pytest.approx((low, high))
        assert row["fn_auroc_audio FNAC"] == pytest.approx(np.mean(fn_audio))
        assert row.gains == ",".join(f"{g:+.3f}" for g in gains)
    assert sorted(effects.n) == [2, 2, 2, 3, 3, 3, 3, 3]


def test_markdown_marks_intervals_that_exclude_zero():
    effects = pd.DataFrame([
        dict(visual_pretrain="demo", class_bias_p=0.5, batch_size=64, fnac_strength=0.4, n=3, FNAC=0.5, NCE=0.4,
             gain=0.1, low=0.05, high=0.15, gains="+0.050,+0.100,+0.150", **{"fn_auroc_audio FNAC": 0.91,
             "fn_auroc_audio NCE": 0.95}),
        dict(visual_pretrain="scratch", class_bias_p=0.0, batch_size=128, fnac_strength=1.6, n=3, FNAC=0.3,
             NCE=0.4, gain=-0.1, low=-0.2, high=-0.01),
    ])
    lines = effects_markdown(effects).splitlines()
    assert len(lines) == 4
    assert lines[2].startswith("| pretrained (demo) | 0.5 | 64 | 0.4 | 3 | 0.400 | 0.500 | +0.100 [+0.050, +0.150] **above 0** "
                               "| +0.050, +0.100, +0.150 | 0.910 / 0.950 |")
    assert lines[3].startswith("| scratch | 0 | 128 | 1.6 | 3 | 0.400 | 0.300 | -0.100 [-0.200, -0.010] *below 0* |")


def test_the_findings_page_table_is_made_from_the_committed_results():
    results = pd.read_csv(RESULTS)
    finished = results[results["status"] == "finished"]
    assert len(finished) >= 30 and finished["seed"].nunique() >= 3
    table = effects_markdown(paired_effects(results))
    assert table in (REPO / "docs" / "findings" / "effect-study.md").read_text()


def _effect_summary(notebook: str) -> str:
    """The bullet list under the notebook's summary of the effect study (the cell that starts with 'No setting')."""
    import nbformat

    cells = nbformat.read(REPO / "notebooks" / notebook, as_version=4).cells
    text = next(c.source for c in cells if c.cell_type == "markdown" and "- No setting helped" in c.source)
    return text[text.index("- No setting helped"):text.index("\n\n", text.index("- No setting helped"))]


def test_notebook_summaries_quote_the_committed_results():
    """The figures 00 and 01 quote of the effect study, recomputed with pandas from the results file: mean paired
    gains per strength, NCE levels and the AUROC ranges; both notebooks say the same."""
    table = pd.read_csv(RESULTS).fillna({"visual_pretrain": "scratch"})
    keys = ["visual_pretrain", "class_bias_p", "batch_size", "seed"]
    nce = table[table.fnac_strength == 0].set_index(keys)
    fnac = table[table.fnac_strength > 0].merge(nce[["ap50"]], on=keys, suffixes=("", "_nce"))
    pre64 = fnac[(fnac.visual_pretrain == "demo") & (fnac.batch_size == 64)]
    gains = (pre64.ap50 - pre64.ap50_nce).groupby([pre64.class_bias_p, pre64.fnac_strength]).mean()
    nce_level = nce.ap50.groupby(level=["visual_pretrain", "class_bias_p", "batch_size"]).mean()
    summary = _effect_summary("01_train.ipynb")
    assert summary == _effect_summary("00_false_negatives_tutorial.ipynb")
    flat = " ".join(summary.split())
    assert f"(gains {gains[0.0, 0.1]:+.2f} and {gains[0.0, 0.4]:+.2f} at 0.1 and 0.4)" in flat
    assert f"costs {-gains[0.0, 1.6]:.2f} at 1.6" in flat
    assert f"{gains[0.5, 0.1]:.2f}, {gains[0.5, 0.4]:.2f} and {gains[0.5, 1.6]:.2f} at w / B 0.1, 0.4 and 1.6" in flat
    assert f"(NCE: {nce_level['demo', 0.5, 64]:.2f})" in flat
    assert f"from {nce_level['scratch', 0.5, 64]:.2f} to {nce_level['demo', 0.5, 64]:.2f}" in flat
    visual = table.groupby(["visual_pretrain", "class_bias_p", "batch_size", "fnac_strength"]).fn_auroc_visual.mean()
    assert f"({visual.min():.2f}-{visual.max():.2f})" in flat
    audio_nce = nce[nce.index.get_level_values("visual_pretrain") == "demo"].fn_auroc_audio
    audio_nce = audio_nce.groupby(level=["class_bias_p", "batch_size"]).mean()
    assert f"AUROC {audio_nce[0.0, 64]:.2f} with ordinary batches, {audio_nce[0.5, 64]:.2f} with" in flat
    strongest = pre64[(pre64.class_bias_p == 0.5) & (pre64.fnac_strength == 1.6)].fn_auroc_audio.mean()
    assert f"(audio {strongest:.2f} at w / B 1.6)" in flat
