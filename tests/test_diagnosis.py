"""The FNAC diagnosis: variant names of the bundled grid, the pairing against a loop over seeds with scipy's
interval, the twin check, the command line on a grid folder, and the findings page's tables against the committed
csv."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from fnac_lab.ablate.diagnosis import (compact_diagnosis, decomposition, diagnosis_markdown, diagnosis_statements,
                                       paired_gains, twin_mismatches, variant_name)
from fnac_lab.ablate.grid import bundled_grid

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "data" / "results" / "fnac_diagnosis.csv"
W = 25.6


def fnac_lab_command(capsys, *args) -> SimpleNamespace:
    """``fnac-lab ARGS`` run in this process: its exit code and what it printed."""
    from fnac_lab.cli import main

    capsys.readouterr()
    rc = main([str(a) for a in args])
    captured = capsys.readouterr()
    return SimpleNamespace(returncode=rc, stdout=captured.out, stderr=captured.err)


def test_the_bundled_grid_names_every_variant_once_per_setting_and_seed():
    points = bundled_grid("fnac_diagnosis").points()  # the notebook resolved from the checkout, whatever the cwd
    names = {}
    for p in points:
        key = (p.parameters["class_bias_p"], p.parameters["seed"], variant_name(p.parameters))
        assert key not in names, key  # two points never share a name within a setting and seed
        names[key] = p
    at = lambda bias: {v for b, _, v in names if b == bias}  # noqa: E731
    assert at(0.5) == {"NCE", "NCE + oracle mask", "FNAC", "FNAC, oracle targets", "FNS-audio only",
                       "FNS-visual only", "TNE only", "FNAC without FNS-audio", "FNAC without FNS-visual",
                       "FNAC without TNE", "FNAC, normalised targets", "FNAC, target tau 0.05", "FNAC, target tau 0.2"}
    assert at(0.0) == {"NCE", "NCE + oracle mask", "FNAC", "FNAC, oracle targets"}
    for main in ("NCE", "NCE + oracle mask", "FNAC", "FNAC, oracle targets"):  # the main contrasts over 5 seeds
        assert {s for b, s, v in names if b == 0.5 and v == main} == {0, 1, 2, 3, 4}
    for (bias, seed, variant), p in names.items():
        assert p.parameters["batch_size"] == 64 and p.parameters["visual_pretrain"] == "demo"
        weights = [p.parameters[k] for k in ("w_fns_audio", "w_fns_visual", "w_tne")]
        assert set(weights) <= {0.0, W} and (variant.startswith("NCE") == (max(weights) == 0))


def _results(rng, seeds=(0, 1, 2, 3)):
    """A results table like ablate's: the twin, the oracle mask, learned FNAC and one knob, per bias and seed."""
    rows = []
    variants = [dict(w_fns_audio=0.0, w_fns_visual=0.0, w_tne=0.0),
                dict(w_fns_audio=0.0, w_fns_visual=0.0, w_tne=0.0, nce_fn_mask="oracle"),
                dict(w_fns_audio=W, w_fns_visual=W, w_tne=W),
                dict(w_fns_audio=W, w_fns_visual=W, w_tne=W, fn_targets="oracle"),
                dict(w_fns_audio=W, w_fns_visual=W, w_tne=W, target_tau=0.05)]
    for bias in (0.0, 0.5):
        for seed in seeds:
            warm = float(rng.uniform(7, 8))
            for v in variants:
                rows.append(dict(class_bias_p=bias, seed=seed, **v, ap50=float(rng.uniform(0.2, 0.8)),
                                 fn_auroc_audio=float(rng.uniform(0.5, 1)), fn_auroc_cross=float(rng.uniform(0.5, 1)),
                                 warmup_nce=float(rng.uniform(6, 7)) if v.get("nce_fn_mask") else warm,
                                 status="finished"))
    return pd.DataFrame(rows)


def test_gains_are_paired_by_seed_with_the_student_t_interval():
    table = _results(np.random.default_rng(0))
    table.loc[(table["seed"] == 3) & (table["w_tne"] == 0) & table["nce_fn_mask"].isna() & (table["class_bias_p"] == 0.5),
              "status"] = "failed"  # seed 3's twin at p = 0.5 failed: its variants drop out of the pairs there
    gains = paired_gains(table).set_index(["class_bias_p", "variant"])
    assert set(gains.index.get_level_values("variant")) == {"NCE + oracle mask", "FNAC", "FNAC, oracle targets",
                                                            "FNAC, target tau 0.05"}
    for bias in (0.0, 0.5):
        seeds = [0, 1, 2] if bias == 0.5 else [0, 1, 2, 3]
        for variant, select in (("FNAC", lambda t: (t["w_tne"] == W) & t["fn_targets"].isna() & t["target_tau"].isna()),
                                ("NCE + oracle mask", lambda t: t["nce_fn_mask"] == "oracle")):
            diffs = []
            for s in seeds:
                at = table[(table["class_bias_p"] == bias) & (table["seed"] == s)]
                twin = at[(at["w_tne"] == 0) & at["nce_fn_mask"].isna()]["ap50"].item()
                diffs.append(at[select(at)]["ap50"].item() - twin)
            row = gains.loc[(bias, variant)]
            low, high = scipy.stats.t.interval(0.95, len(diffs) - 1, loc=np.mean(diffs), scale=scipy.stats.sem(diffs))
            assert row["n"] == len(seeds) and row["gain"] == pytest.approx(np.mean(diffs))
            assert (row["low"], row["high"]) == pytest.approx((low, high))
            assert row["seeds"] == ",".join(map(str, seeds))
    parts = decomposition(paired_gains(table))
    assert set(parts) == {"oracle_mask", "oracle_targets", "learned"}
    assert parts["learned"]["gain"] == pytest.approx(gains.loc[(0.5, "FNAC"), "gain"])


def test_twin_check_finds_a_warm_up_that_differs():
    table = _results(np.random.default_rng(1))
    assert twin_mismatches(table) == []  # the oracle mask changes NCE itself: it is no warm-up twin
    fnac = (table["w_tne"] == W) & table["fn_targets"].isna() & table["target_tau"].isna()
    table.loc[fnac & (table["seed"] == 2) & (table["class_bias_p"] == 0.0), "warmup_nce"] += 1e-12
    found = twin_mismatches(table)
    assert len(found) == 1 and found[0].startswith("FNAC (class_bias_p 0, seed 2)")


def test_command_line_writes_the_results_and_every_epoch(tmp_path, capsys):
    table = _results(np.random.default_rng(2), seeds=(0, 1))
    folders = []
    for i, row in table.iterrows():
        folder = tmp_path / "points" / f"p{i}"
        (folder / "fnac").mkdir(parents=True)
        epochs = [{"epoch": e, "ap50": 0.1 * e, "fn_auroc_audio": 0.6, "fn_auroc_cross": 0.55 + e / 100,
                   "nce": 8.0 - e, "loss": 8.0 - e, "train_seconds": 1.0} for e in (1, 2)]
        (folder / "fnac" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in epochs))
        folders.append(str(folder))
    table["folder"] = folders
    table.to_csv(tmp_path / "results.csv", index=False)
    out, per_epoch = tmp_path / "diagnosis.csv", tmp_path / "epochs.csv"
    proc = fnac_lab_command(capsys, "diagnosis", tmp_path, "--write", out, "--write-epochs", per_epoch)
    assert proc.returncode == 0, proc.stderr
    written = pd.read_csv(out)
    assert len(written) == len(table) and written["ap50"].tolist() == pytest.approx(table["ap50"].tolist())
    assert diagnosis_markdown(paired_gains(written)) in proc.stdout  # the committed form gives the same table
    epochs = pd.read_csv(per_epoch)
    assert len(epochs) == 2 * len(table) and epochs["fn_auroc_cross"].tolist()[:2] == pytest.approx([0.56, 0.57])
    table.loc[0, "warmup_nce"] += 1.0  # seed 0's twin at p = 0: its variants are no longer twins
    table.to_csv(tmp_path / "results.csv", index=False)
    proc = fnac_lab_command(capsys, "diagnosis", tmp_path)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "not twins" in proc.stderr


@pytest.mark.skipif(not RESULTS.is_file(), reason="the diagnosis grid has not been collected yet")
def test_the_findings_page_holds_the_tables_of_the_committed_results():
    committed = pd.read_csv(RESULTS)
    assert list(committed.columns) == list(compact_diagnosis(committed).columns)
    assert twin_mismatches(committed) == []
    page = (REPO / "docs" / "findings" / "diagnosis.md").read_text()
    assert diagnosis_markdown(paired_gains(committed)) in page
    from fnac_lab.ablate.diagnosis import diagnosis_statements, extended_markdown

    assert extended_markdown(committed) in page
    assert all(f"- {line}" in page for line in diagnosis_statements(committed))


def test_statements_pair_the_main_contrasts_with_each_other():
    table = _results(np.random.default_rng(3))
    lines = diagnosis_statements(table)
    at = table[table["class_bias_p"] == 0.5]
    oracle_t = at[at["fn_targets"] == "oracle"].set_index("seed")["ap50"]
    learned = at[(at["w_tne"] == W) & at["fn_targets"].isna() & at["target_tau"].isna()].set_index("seed")["ap50"]
    diffs = (oracle_t - learned).to_numpy()
    low, high = scipy.stats.t.interval(0.95, len(diffs) - 1, loc=diffs.mean(), scale=scipy.stats.sem(diffs))
    expected = f"{diffs.mean():+.3f} [{low:+.3f}, {high:+.3f}] over 4 seeds"
    assert any(line.startswith("Perfect targets") and expected in line for line in lines), lines
    assert len(lines) == 5 and sum("gain over the NCE twin" in line for line in lines) == 3


@pytest.mark.parametrize("content,needle", [(b"", "is empty; expected the results of data/grids/fnac_diagnosis.yaml"),
                                            (b"seed,ap50\n0,0.5\n", "no class_bias_p, w_fns_audio"),
                                            (None, "is a folder")])
def test_command_line_refuses_bad_results_in_one_line(content, needle, tmp_path, capsys):
    path = tmp_path / "results.csv" if content is not None else tmp_path / "empty_folder"
    path.mkdir() if content is None else path.write_bytes(content)
    proc = fnac_lab_command(capsys, "diagnosis", path)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert str(path) in proc.stderr and needle in proc.stderr and "Traceback" not in proc.stderr


def test_extended_scores_of_the_runs_match_the_evaluate_command(tmp_path, capsys):
    """Each run's best checkpoint scored with negatives gives what ``fnac-lab evaluate --set test_negatives`` gives
    for it, and a checkpoint whose test AP50 no longer matches its run is refused."""
    from fnac_lab.ablate.diagnosis import extended_markdown, extended_records
    from fnac_lab.config import preset
    from fnac_lab.train import train

    cfg = preset("smoke", n_train=64, n_val=32, n_test=32, batch_size=16, epochs=1, image_size=32, embed_dim=32,
                 w_fns_audio=0, w_fns_visual=0, w_tne=0)
    rows = []
    for seed in (0, 1):
        run = train(cfg.replace(seed=seed), tmp_path / f"p{seed}" / "fnac", progress=False)
        rows.append(dict(class_bias_p=0.0, seed=seed, w_fns_audio=0.0, w_fns_visual=0.0, w_tne=0.0,
                         ap50=run.summary["test"]["ap50"], warmup_nce=np.nan, status="finished",
                         folder=str(tmp_path / f"p{seed}")))
    scored = extended_records(pd.DataFrame(rows), test_negatives=0.5, progress=False)
    for row in scored.to_dict("records"):
        out = Path(row["folder"]) / "eval"
        proc = fnac_lab_command(capsys, "evaluate", "--checkpoint", Path(row["folder"]) / "fnac" / "checkpoints" / "best.pt",
                                "--set", "test_negatives=0.5", "--out", out, "--quiet")
        assert proc.returncode == 0, proc.stderr
        expected = json.loads((out / "scores.json").read_text())
        for col in ("extended_ap", "max_f1", "precision"):
            assert row[col] == pytest.approx(expected[col], abs=1e-12), col
    assert "| 0 |" not in extended_markdown(scored)  # NCE twins only: nothing to pair, no rows
    broken = pd.DataFrame(rows).assign(ap50=lambda t: t["ap50"] + 0.5)
    with pytest.raises(Exception, match="not the run's"):
        extended_records(broken, progress=False)
