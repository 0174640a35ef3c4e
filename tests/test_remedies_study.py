"""The remedies study's tables (fnac_lab.ablate.remedies, ``fnac-lab remedies``): variants named from the grid's
columns, gains paired by seed against scipy's t interval, the oracle mask's share recovered, the twin check and the
knob chosen on validation, detection and validation gaps epoch by epoch, the goal's verdict and the sentences of
the conclusion."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from fnac_lab.ablate.remedies import (ORACLE_MASK, chosen_knobs, compact_remedies, detection_by_epoch, goal_verdicts, with_detection,
                                      paired_gains, recovered_share, remedies_markdown, remedies_statements,
                                      twin_mismatches, validation_gaps, variant_name)

SEEDS = range(5)


def results(warmup=8.4) -> pd.DataFrame:
    """A results.csv as the grid writes it: axis columns, each point's options, its metrics."""
    rng = np.random.default_rng(3)
    rows = []
    for seed in SEEDS:
        base = 0.4 + 0.05 * rng.standard_normal()
        points = [({"method": "nce"}, 0.0, 0.50), ({"method": "nce", "nce.nce_fn_mask": "oracle"}, 0.2, 0.60),
                  ({"method": "fn_elimination", "fn_elimination.k": 1}, 0.1, 0.55),
                  ({"method": "fn_elimination", "fn_elimination.k": 3}, -0.05 + 0.02 * seed, 0.52),
                  ({"method": "debiased_nce", "debiased_nce.tau_plus": 0.05}, 0.03 * rng.standard_normal(), 0.5)]
        for settings, gain, val in points:
            rows.append({"seed": seed, "class_bias_p": 0.5, **settings, "status": "finished", "ap50": base + gain,
                         "val_ap50": val, "warmup_nce": warmup + seed, "mean_ciou": 0.4, "auc": 0.4})
    return pd.DataFrame(rows)


def epochs(table: pd.DataFrame) -> pd.DataFrame:
    """The twins' epochs: their NCE loss in epoch 2 (the remedies' default warm-up) is the runs' warm-up NCE."""
    twins = compact_remedies(table)
    twins = twins[twins["variant"] == "NCE"]
    return pd.DataFrame([{"variant": "NCE", "class_bias_p": r["class_bias_p"], "seed": r["seed"], "epoch": e,
                          "nce": r["warmup_nce"] + (0 if e == 2 else 0.3)}
                         for r in twins.to_dict("records") for e in (1, 2, 3)])


def test_committed_pilot_runs_are_twins_and_name_their_knobs():
    """The committed pilot (data/results/fn_remedies_knobs*.csv): every remedy's warm-up NCE is its twin's."""
    from pathlib import Path

    results = Path(__file__).resolve().parents[1] / "data" / "results"
    table = pd.read_csv(results / "fn_remedies_knobs.csv")
    twin_epochs = pd.read_csv(results / "fn_remedies_knobs_epochs.csv")
    assert twin_mismatches(table, twin_epochs) == [] and len(table) == 9
    assert (table["warmup_epochs"][table["method"] != "nce"] == 2).all()
    nce = twin_epochs[twin_epochs["variant"] == "NCE"].set_index("epoch")["nce"]
    assert (table.loc[table["method"] != "nce", "warmup_nce"] == nce[2]).all()
    page = (Path(__file__).resolve().parents[1] / "docs" / "findings" / "remedies.md").read_text()
    assert remedies_markdown(paired_gains(table)) in page  # the findings page's pilot table is made from the csv


def test_variants_are_named_from_the_method_and_the_options_the_point_set():
    assert variant_name({"method": "nce", "nce.nce_fn_mask": math.nan}) == "NCE"
    assert variant_name({"method": "nce", "nce.nce_fn_mask": "oracle"}) == ORACLE_MASK == "NCE + oracle mask"
    assert variant_name({"method": "fn_elimination", "fn_elimination.k": 3.0, "debiased_nce.tau_plus": math.nan}) \
        == "FN elimination (k 3)"
    assert variant_name({"method": "debiased_nce", "debiased_nce.tau_plus": 0.05}) == "Debiased NCE (tau_plus 0.05)"


def test_gains_are_paired_by_seed_with_the_t_interval():
    table = results()
    gains = paired_gains(table).set_index("variant")
    for variant, settings in [("FN elimination (k 3)", {"fn_elimination.k": 3}),
                              ("Debiased NCE (tau_plus 0.05)", {"debiased_nce.tau_plus": 0.05})]:
        key = next(iter(settings))
        runs = table[table[key] == settings[key]].set_index("seed")["ap50"]
        twins = table[(table["method"] == "nce") & table["nce.nce_fn_mask"].isna()].set_index("seed")["ap50"]
        diffs = (runs - twins).to_numpy()
        low, high = scipy.stats.t.interval(0.95, len(diffs) - 1, loc=diffs.mean(), scale=scipy.stats.sem(diffs))
        row = gains.loc[variant]
        assert row["n"] == 5 and row["gain"] == pytest.approx(diffs.mean(), abs=1e-12)
        assert (row["low"], row["high"]) == pytest.approx((low, high), abs=1e-12)
    assert "NCE" not in gains.index and gains.loc[ORACLE_MASK, "gain"] == pytest.approx(0.2)


def test_the_share_recovered_is_the_ratio_of_mean_gains_with_a_bootstrap_interval():
    gains = paired_gains(results()).set_index("variant")
    half = gains.loc["FN elimination (k 1)"]  # every seed gains 0.1 where the oracle gains 0.2
    assert (half["recovered"], half["recovered_low"], half["recovered_high"]) == pytest.approx((0.5, 0.5, 0.5))
    k3 = gains.loc["FN elimination (k 3)"]
    assert k3["recovered"] == pytest.approx(np.mean([-0.05 + 0.02 * s for s in SEEDS]) / 0.2)
    assert k3["recovered_low"] < k3["recovered"] < k3["recovered_high"]
    one = recovered_share({0: 0.1}, {0: 0.2})  # one seed: a share, no interval
    assert one[0] == pytest.approx(0.5) and math.isnan(one[1]) and one[3] == 1
    assert math.isnan(recovered_share({0: 0.1, 1: 0.2}, {0: 0.1, 1: -0.1})[0])
    table = results()
    mask = table["nce.nce_fn_mask"] == "oracle"
    table.loc[mask, "ap50"] += np.where(table.loc[mask, "seed"] % 2 == 0, -0.3, -0.1)  # oracle gains -0.1 or +0.1
    across = paired_gains(table).set_index("variant")  # the oracle's interval holds zero: no share is given
    assert across[["recovered", "recovered_low", "recovered_high"]].isna().all().all()


def test_the_twin_check_names_a_remedy_whose_warm_up_differs_and_spares_the_oracle_mask():
    table = results()
    twin_epochs = epochs(table)
    assert twin_mismatches(table, twin_epochs) == []
    table.loc[(table["method"] == "nce") & table["nce.nce_fn_mask"].notna(), "warmup_nce"] += 1.0
    assert twin_mismatches(table, twin_epochs) == []  # the mask changes NCE itself
    table.loc[(table["method"] == "debiased_nce") & (table["seed"] == 2), "warmup_nce"] += 1e-9
    found = twin_mismatches(table, twin_epochs)
    assert len(found) == 1 and found[0].startswith("Debiased NCE (tau_plus 0.05) (class_bias_p 0.5, seed 2)")


def test_knobs_are_chosen_on_validation_with_ties_to_the_first():
    table = results()
    assert chosen_knobs(table) == {"fn_elimination": "FN elimination (k 1)"}  # debiased_nce ran one knob only
    table.loc[table["fn_elimination.k"] == 3, "val_ap50"] = 0.55  # a tie: the first in the grid's order
    assert chosen_knobs(table)["fn_elimination"] == "FN elimination (k 1)"


def test_the_command_prints_the_table_writes_the_compact_csv_and_refuses_broken_twins(tmp_path, capsys):
    from fnac_lab.cli import main

    def remedies(*args) -> tuple[int, str, str]:
        rc = main(["remedies", *map(str, args)])
        captured = capsys.readouterr()
        return rc, captured.out, captured.err

    table = results()
    table.to_csv(tmp_path / "results.csv", index=False)
    out, twin_epochs = tmp_path / "compact.csv", tmp_path / "epochs.csv"
    epochs(table).to_csv(twin_epochs, index=False)
    rc, stdout, stderr = remedies(tmp_path, "--write", out, "--epochs", twin_epochs)
    assert rc == 0, stderr
    assert "| 0.5 | FN elimination (k 1) | 5 |" in stdout and "fn_elimination: best validation AP50" in stdout
    assert list(pd.read_csv(out)["variant"]) == list(compact_remedies(table)["variant"])
    table.loc[table["method"] == "debiased_nce", "warmup_nce"] += 0.5
    table.to_csv(tmp_path / "results.csv", index=False)
    rc, _, stderr = remedies(tmp_path, "--epochs", twin_epochs)
    assert rc != 0 and "5 runs are not twins of their NCE run" in stderr
    assert len(stderr.strip().splitlines()) == 1
    rc, _, stderr = remedies(tmp_path)
    assert rc != 0 and "the twin check needs the runs' epochs; pass --epochs CSV" in stderr


def run_epochs() -> pd.DataFrame:
    """Epochs of two seeds: the twin, and FN elimination detecting with known counts (d detected, h of them
    same-class, s same-class, P pairs per epoch)."""
    rows = []
    for seed in (0, 1):
        for epoch in (1, 2, 3):
            rows.append({"variant": "NCE", "class_bias_p": 0.5, "seed": seed, "epoch": epoch, "ap50": 0.3 + 0.1 * epoch})
            d, h, s, pairs = 40 + seed, 10 + epoch, 200, 4032
            rows.append({"variant": "FN elimination (k 1)", "class_bias_p": 0.5, "seed": seed, "epoch": epoch,
                         "ap50": 0.3 + 0.1 * epoch + (0 if epoch < 3 else 0.05 - 0.2 * seed),
                         "fn_precision": h / d, "fn_recall": h / s, "fn_detected_share": d / pairs})
    return pd.DataFrame(rows)


def test_detection_by_epoch_averages_seeds_and_recovers_the_share_of_same_class_pairs():
    detection = detection_by_epoch(run_epochs(), 0.5).set_index("epoch")
    for epoch in (1, 2, 3):
        h = 10 + epoch
        assert detection.loc[epoch, "fn_precision"] == pytest.approx((h / 40 + h / 41) / 2)
        assert detection.loc[epoch, "fn_recall"] == pytest.approx(h / 200)
        assert detection.loc[epoch, "fn_detected_share"] == pytest.approx((40 / 4032 + 41 / 4032) / 2)
        assert detection.loc[epoch, "same_class_share"] == pytest.approx(200 / 4032)
        assert detection.loc[epoch, "n"] == 2
    assert list(detection["variant"].unique()) == ["FN elimination (k 1)"]  # the twin detects nothing


def test_validation_gaps_pair_each_epoch_with_the_twin():
    gaps = validation_gaps(run_epochs(), 0.5).set_index("epoch")
    assert gaps.loc[1, "gap"] == pytest.approx(0) and gaps.loc[2, "gap"] == pytest.approx(0)
    values = [0.05, 0.05 - 0.2]
    half = scipy.stats.t.ppf(0.975, 1) * np.std(values, ddof=1) / math.sqrt(2)
    assert gaps.loc[3, "gap"] == pytest.approx(np.mean(values))
    assert (gaps.loc[3, "low"], gaps.loc[3, "high"]) == pytest.approx((np.mean(values) - half, np.mean(values) + half))


def gain_rows(**variants) -> pd.DataFrame:
    """paired_gains rows: variant -> {class_bias_p: (n, low, high)}."""
    rows = [{"class_bias_p": bias, "variant": name, "method": "debiased_nce", "n": n, "gain": (low + high) / 2,
             "low": low, "high": high} for name, at in variants.items() for bias, (n, low, high) in at.items()]
    rows.append({"class_bias_p": 0.5, "variant": ORACLE_MASK, "method": "nce", "n": 5, "gain": 0.2, "low": 0.1,
                 "high": 0.3})  # a bound with the labels: never a verdict
    return pd.DataFrame(rows)


def test_the_goal_needs_five_seeds_above_zero_and_no_loss_without_bias():
    verdicts = goal_verdicts(gain_rows(
        won={0.5: (5, 0.01, 0.2), 0.0: (3, -0.05, 0.04)},
        loses_unbiased={0.5: (5, 0.01, 0.2), 0.0: (3, -0.05, -0.01)},
        too_few={0.5: (4, 0.01, 0.2), 0.0: (5, 0.0, 0.1)},
        holds_zero={0.5: (5, -0.01, 0.2), 0.0: (5, 0.0, 0.1)},
        below={0.5: (2, -0.3, -0.1)},
        unbiased_missing={0.5: (5, 0.01, 0.2)}))
    assert verdicts == {"won": "met", "loses_unbiased": "not met", "too_few": "open", "holds_zero": "not met",
                        "below": "not met", "unbiased_missing": "open"}


def test_the_statements_check_the_twins_and_give_each_remedys_figures():
    table = results()
    lines = remedies_statements(table, epochs(table))
    assert lines[0] == ("Twins: each of the 15 runs with a warm-up trained it exactly as its NCE twin (warm-up NCE "
                        "equal to the last digit).")
    gains = paired_gains(table).set_index("variant")
    k1 = gains.loc["FN elimination (k 1)"]
    line = next(x for x in lines if x.startswith("FN elimination (k 1) at class_bias_p 0.5"))
    assert f"{k1['gain']:+.3f} [{k1['low']:+.3f}, {k1['high']:+.3f}] over 5 seeds" in line
    assert f"{k1['recovered']:.2f} [" in line and "not yet run at class_bias_p 0." in line
    assert not any(x.startswith(ORACLE_MASK + " at") for x in lines)  # the bound is stated as a bound
    assert any(x.startswith(f"Bound with the labels, {ORACLE_MASK}, at class_bias_p 0.5: test AP50 gain over the NCE "
                            f"twin +") for x in lines)
    assert lines[-1].startswith("Goal met by no label-free remedy so far") and "still open" in lines[-1]
    broken = table.copy()
    broken.loc[broken["method"] == "debiased_nce", "warmup_nce"] += 1e-6
    assert remedies_statements(broken, epochs(table))[0].startswith("Twins: 5 of the 15 runs with a warm-up differ")


def test_the_detection_table_gives_each_detecting_variants_last_epoch():
    from fnac_lab.ablate.remedies import detection_markdown

    table = detection_markdown(run_epochs(), 0.5)
    h = 13  # epoch 3
    assert (f"| 0.5 | FN elimination (k 1) | 3 | 2 | {(40 + 41) / 2 / 4032:.1%} | {(h / 40 + h / 41) / 2:.2f} "
            f"| {200 / 4032:.2f} | {h / 200:.2f} |") in table
    assert "| NCE |" not in table


def test_the_compact_table_carries_each_runs_last_epoch_detection():
    table = results()
    rows = epochs(table).assign(fn_precision=float("nan"), fn_recall=float("nan"), fn_detected_share=float("nan"))
    k1 = [{"variant": "FN elimination (k 1)", "class_bias_p": 0.5, "seed": s, "epoch": e, "nce": 1.0,
           "fn_precision": 0.1 * e, "fn_recall": 0.01 * e, "fn_detected_share": 0.001 * e} for s in SEEDS for e in (3, 1, 2)]
    compact = with_detection(table, pd.concat([rows, pd.DataFrame(k1)], ignore_index=True))
    detecting = compact[compact["variant"] == "FN elimination (k 1)"]
    assert len(compact) == len(table) and (detecting["fn_precision"] == 0.1 * 3).all()
    assert (detecting["fn_detected_share"] == 0.001 * 3).all() and (detecting["fn_recall"] == 0.01 * 3).all()
    assert compact.loc[compact["variant"] == "NCE", "fn_precision"].isna().all()
    again = with_detection(compact, pd.concat([rows, pd.DataFrame(k1)], ignore_index=True))  # a committed csv
    pd.testing.assert_frame_equal(again, compact)


def test_the_committed_study_holds_twins_and_the_findings_page_shows_its_tables_and_sentences():
    """data/results/fn_remedies*.csv: every remedy's warm-up is its twin's, and the findings page "What recovers the
    gap without labels" (docs/findings/remedies.md) shows the tables and sentences the csv files make."""
    from pathlib import Path

    from fnac_lab.ablate.remedies import detection_markdown

    repo = Path(__file__).resolve().parents[1]
    table = pd.read_csv(repo / "data" / "results" / "fn_remedies.csv")
    study_epochs = pd.read_csv(repo / "data" / "results" / "fn_remedies_epochs.csv")
    assert twin_mismatches(table, study_epochs) == []
    page = (repo / "docs" / "findings" / "remedies.md").read_text()
    assert remedies_markdown(paired_gains(table)) in page and detection_markdown(study_epochs, 0.5) in page
    assert all(f"- {line}" in page for line in remedies_statements(table, study_epochs))
    done = table[(table["status"] == "finished") & (table["variant"] == "NCE") & (table["class_bias_p"] == 0.5)]
    assert f"same-class AUROC {done['fn_auroc_cross'].mean():.2f} for the twins" in page


def test_the_tutorials_conclusion_quotes_the_committed_study():
    import json
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    gains = paired_gains(pd.read_csv(repo / "data" / "results" / "fn_remedies.csv"))
    gains = gains[gains["class_bias_p"] == 0.5].set_index("method")
    cells = json.loads((repo / "notebooks" / "00_false_negatives_tutorial.ipynb").read_text())["cells"]
    text = " ".join("".join(cells[-1]["source"]).split())
    for method, sign in (("supcon_oracle", 1), ("fn_elimination", 1), ("debiased_nce", 1), ("fn_attraction", -1),
                         ("hard_negative_nce", -1)):
        g = gains.loc[method]
        if sign > 0:
            quoted = f"{g['gain']:+.2f} [{g['low']:+.2f}, {g['high']:+.2f}]"
        else:  # quoted as a cost
            quoted = f"costs {-g['gain']:.2f} [{-g['high']:.2f}, {-g['low']:.2f}]".replace("[-0.00", "[0.00")
            quoted = quoted if -g["high"] >= 0 else f"costs {-g['gain']:.2f} [{-g['high']:+.2f}, {-g['low']:+.2f}]"
        assert quoted in text, (method, quoted)
