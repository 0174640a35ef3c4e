"""The paired stamps study: its points, the commands it runs, the rows it reads back, resuming and refusals. The
training itself is stood in for by a runner that writes a run's files (the real pipeline is tested in
tests/test_stamps_build.py)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from fnac_lab.ablate.effects import paired_effects, read_results
from fnac_lab.ablate.stamps_study import FORMS, run_study, study_points
from fnac_lab.utils import FnacError


def fake_root(tmp_path):
    root = tmp_path / "bench"
    (root / "cache").mkdir(parents=True)
    (root / "cache" / "meta.json").write_text("{}")
    return root


class FakeRunner:
    """Writes what `train` and `evaluate` would, with scores that depend on the settings in the command."""

    def __init__(self, fail: str | None = None):
        self.calls: list[list[str]] = []
        self.fail = fail

    def __call__(self, command, log):
        self.calls.append(command)
        folder = log.parent
        if self.fail and self.fail in str(folder):
            raise FnacError(f"train failed (see {log})")
        if command[3] == "train":
            sets = dict(a.removeprefix("--set=").split("=", 1) for a in command if a.startswith("--set="))
            w, seed = float(sets["w_tne"]), int(sets["seed"])
            (folder / "config.json").write_text(json.dumps({"warmup_epochs": 2}))
            history = [{"epoch": e, "loss": 8.0 + seed if e <= 2 else 7.0 - w / 1000, "fnac_active": e > 2 and w > 0,
                        "fn_auroc_audio": 0.6, "fn_auroc_visual": 0.5, "fn_auroc_foreground": 0.55, "fn_ratio": 0.3,
                        "train_seconds": 1.5} for e in range(1, 5)]
            (folder / "metrics.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))
            (folder / "summary.json").write_text(json.dumps({"best_epoch": 4, "test": {
                "ap50": 0.1 + w / 1000 + seed / 100, "mean_ciou": 0.3, "auc": 0.31}}))
        else:
            (folder / "test_unseen_stamps").mkdir()
            (folder / "test_unseen_stamps" / "scores.json").write_text(json.dumps({"ap50": 0.2, "mean_ciou": 0.25,
                                                                                  "auc": 0.26}))


def test_points_come_seed_by_seed_with_twins_together():
    points = study_points([3, 7])
    assert [(p.seed, p.class_bias_p, p.form) for p in points[:6]] == [
        (3, 0.0, "nce"), (3, 0.0, "study"), (3, 0.0, "published"), (3, 0.5, "nce"), (3, 0.5, "study"),
        (3, 0.5, "published")]
    assert len(points) == 12 and {p.seed for p in points[6:]} == {7}
    with pytest.raises(FnacError, match="--forms: unknown form 'fnac'"):
        study_points([0], forms=["nce", "fnac"])


def test_the_study_trains_each_point_reads_its_rows_and_resumes(tmp_path):
    root, out = fake_root(tmp_path), tmp_path / "study"
    runner = FakeRunner()
    results = run_study(out, root=root, seeds=[0, 1], batch_size=64, runner=runner, progress=False)
    assert len(runner.calls) == 24  # train and evaluate per point
    train = [c for c in runner.calls if c[3] == "train"][2]  # seed 0, p 0, published
    assert "--preset" in train and "stamps" in train and f"--set=test_root={root}" in train
    assert "--set=w_tne=49.92" in train and "--set=detach_targets=False" in train  # 0.78 * 64, targets live
    row = results[(results.seed == 1) & (results.form == "published") & (results.class_bias_p == 0.5)].iloc[0]
    assert row.ap50 == pytest.approx(0.1 + 0.78 * 64 / 1000 + 0.01) and row.unseen_ap50 == 0.2
    assert row.warmup_loss == 9.0 and row.fnac_strength == 0.78 and row.visual_pretrain == "scratch"
    assert (results.groupby(["class_bias_p", "seed"]).warmup_loss.nunique() == 1).all()
    assert pd.read_csv(out / "results.csv").shape == (12, len(results.columns))
    effects = paired_effects(read_results(out / "results.csv"))  # the twins pair up
    assert sorted(set(effects.fnac_strength)) == [FORMS["study"][0], FORMS["published"][0]]
    again = FakeRunner()
    run_study(out, root=root, seeds=[0, 1], batch_size=64, runner=again, progress=False)
    assert again.calls == []  # every point has its scores: nothing runs again


def test_a_failed_point_is_listed_and_the_others_run(tmp_path):
    results = run_study(tmp_path / "s", root=fake_root(tmp_path), seeds=[0], runner=FakeRunner(fail="p0.5-seed0-study"),
                        progress=False)
    assert list(results.status) == ["finished"] * 4 + ["failed", "finished"]
    assert "train failed" in (tmp_path / "s" / "p0.5-seed0-study" / "error.txt").read_text()


def test_other_settings_or_a_foreign_folder_are_refused(tmp_path):
    root = fake_root(tmp_path)
    run_study(tmp_path / "s", root=root, seeds=[0], forms=["nce"], runner=FakeRunner(), progress=False)
    with pytest.raises(FnacError, match="holds a study of other settings"):
        run_study(tmp_path / "s", root=root, seeds=[0], forms=["nce"], batch_size=32, runner=FakeRunner())
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(FnacError, match="is not empty and holds no study"):
        run_study(tmp_path / "other", root=root, seeds=[0], runner=FakeRunner())
    with pytest.raises(FnacError, match="no stamps benchmark with its training cache"):
        run_study(tmp_path / "t", root=tmp_path / "nowhere", seeds=[0], runner=FakeRunner())


def test_the_findings_page_holds_the_tables_of_the_committed_study():
    from pathlib import Path

    from fnac_lab.ablate.stamps_study import study_tables

    repo = Path(__file__).resolve().parents[1]
    results = pd.read_csv(repo / "data" / "results" / "stamps_fnac.csv")
    assert len(results) == 30 and (results.status == "finished").all() and results.seed.nunique() == 5
    assert (results.groupby(["class_bias_p", "seed"]).warmup_loss.nunique() == 1).all()  # twins to the last digit
    assert study_tables(results) in (repo / "docs" / "findings" / "stamps.md").read_text()
