"""The configuration: published defaults, checked values, presets, command-line overrides."""

from __future__ import annotations

import math

import pytest

from fnac_lab.cli import parse_overrides
from fnac_lab.config import (PRESETS, ConfigError, PretrainConfig, TrainConfig, preset,
                             pretrain_config_for, pretrain_preset)


def test_config_validation_names_the_field():
    with pytest.raises(ConfigError, match=r"^fnac\.tne_threshold=1\.5"):
        TrainConfig(options={"tne_threshold": 1.5})
    with pytest.raises(ConfigError, match="did you mean fnac.w_tne"):
        parse_overrides(["fnac.w_tn=3"])
    with pytest.raises(ConfigError, match="^fnac.w_tne: an option of method 'fnac', and this run's method is 'nce'"):
        preset("smoke", method="nce", w_tne=0)
    with pytest.raises(ConfigError, match="^method='ez': unknown method"):
        preset("smoke", method="ez")
    with pytest.raises(ConfigError, match="did you mean 'batch_size'"):
        parse_overrides(["batchsize=3"])
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["lr"])
    assert preset("smoke", tne_threshold="soft").options.tne_threshold is None  # a flat name of an earlier record
    assert preset("smoke", **{"fnac.detach_targets": "no"}).options.detach_targets is False
    defaults = TrainConfig(visual_pretrained=False)
    assert (defaults.tau, defaults.lr, defaults.batch_size, defaults.options.w_tne, defaults.visual_dropout) == \
        (0.03, 1e-4, 128, 100.0, 0.9)


@pytest.mark.parametrize("name,value", [("tau", "inf"), ("tau", "nan"), ("lr", "inf"), ("w_tne", "inf"),
                                        ("weight_decay", "nan"), ("visual_dropout", "nan")])
def test_non_finite_numbers_are_refused(name, value):
    with pytest.raises(ConfigError, match=f"^(fnac\\.)?{name}="):
        preset("smoke", **{name: value})


def test_audio_augment_takes_a_draw_or_a_boolean():
    assert TrainConfig().audio_augment == "per_axis"
    assert preset("smoke", audio_augment="published").audio_augment == "published"
    assert [preset("smoke", audio_augment=v).audio_augment for v in (True, "true", False, "off", "no")] == \
        ["per_axis", "per_axis", "off", "off", "off"]
    with pytest.raises(ConfigError, match="audio_augment='sometimes': must be one of per_axis, published, off"):
        preset("smoke", audio_augment="sometimes")


def test_visual_pretrain_names_a_pretraining_preset_cut_for_the_run():
    cfg = preset("demo", visual_pretrain="demo")
    pre = pretrain_config_for(cfg)
    assert (pre.visual_backbone, pre.visual_stage, pre.image_size) == (cfg.visual_backbone, cfg.visual_stage, 48)
    assert pre.n_classes == 64 and pre == pretrain_preset("demo", device=cfg.device)
    with pytest.raises(ConfigError, match="visual_pretrain='imagenet': must be one of smoke, demo"):
        preset("demo", visual_pretrain="imagenet")
    with pytest.raises(ConfigError, match="visual_pretrain=.*set one of them"):
        preset("demo", visual_pretrain="demo", visual_weights="/x.pt")
    with pytest.raises(ConfigError, match="unknown setting 'epoch' \\(did you mean 'epochs'\\?\\)"):
        pretrain_preset("demo", epoch=3)
    with pytest.raises(ConfigError, match="n_classes=65"):
        PretrainConfig(n_classes=65)
    assert parse_overrides(["lr=0.01"], PretrainConfig) == {"lr": "0.01"}


STAMPS_PATHS = {"test_root", "cache_dir", "train_ids", "train_labels", "test_annotations", "val_split_csv",
                "test_split_csv"}


def test_presets_resolve_and_differ_from_the_defaults_only_where_they_say():
    defaults = TrainConfig().to_dict()
    for name, changes in PRESETS.items():
        cfg = preset(name).to_dict()
        paths = STAMPS_PATHS if name == "stamps" else set()
        assert {k for k in cfg if cfg[k] != defaults[k]} == {k for k, v in changes.items() if defaults[k] != v} | paths
    assert math.isclose(preset("demo").lr, 3e-3)


def test_the_stamps_preset_reads_the_benchmark_under_its_root(tmp_path, monkeypatch):
    monkeypatch.setenv("FNAC_LAB_CACHE", str(tmp_path / "cache"))
    default = preset("stamps")
    assert default.test_root == str(tmp_path / "cache" / "stamps-benchmark")
    cfg = preset("stamps", test_root=str(tmp_path / "b"), test_split_csv=str(tmp_path / "b" / "test_unseen_stamps.csv"))
    assert {k: getattr(cfg, k) for k in STAMPS_PATHS} == {
        "test_root": str(tmp_path / "b"), "cache_dir": str(tmp_path / "b" / "cache"),
        "train_ids": str(tmp_path / "b" / "train.csv"), "train_labels": str(tmp_path / "b" / "train.csv"),
        "test_annotations": str(tmp_path / "b" / "vggss.json"), "val_split_csv": str(tmp_path / "b" / "val.csv"),
        "test_split_csv": str(tmp_path / "b" / "test_unseen_stamps.csv")}
    assert (cfg.dataset, cfg.trainset, cfg.testset) == ("real", "stamps", "vggss")


def _trains(cfg, n_train: int = 1024) -> dict:
    """What a configuration trains, read from the training loop's own parts rather than from its fields: the
    epochs whose loss is NCE alone, the weight of every FNAC term after them, and the size of every batch."""
    import torch

    from fnac_lab.methods import weighted_total
    from fnac_lab.train import batch_sampler

    terms = {"nce": torch.tensor(1.0), "fns_audio": torch.tensor(2.0), "fns_visual": torch.tensor(3.0),
             "tne": torch.tensor(5.0)}
    method = cfg.build_method()
    nce_only = [e for e in range(cfg.epochs) if float(weighted_total(terms, method.weights(e))) == 1.0]
    after = float(weighted_total(terms, method.weights(cfg.epochs - 1))) - 1.0
    sizes = {len(b) for b in batch_sampler(cfg, torch.zeros(n_train, dtype=torch.long), 0)}
    weights = {k: w for k, w in method.weights(cfg.epochs - 1).items() if k != "nce"}
    return {"nce_only_epochs": nce_only, "fnac_weights": weights, "after_warmup": after, "batch_sizes": sizes}


def test_paper_presets_train_the_published_schedule():
    """The paper presets train what the published scripts do: NCE alone for the warm-up, then each FNAC term at
    weight 100, in batches of the published size; paper_builtin keeps the published w / B."""
    for name, (epochs, warmup, batch) in {"paper": (20, 3, 128), "paper_scripts": (30, 5, 256)}.items():
        cfg = preset(name)
        got = _trains(cfg)
        assert cfg.epochs == epochs and got["nce_only_epochs"] == list(range(warmup)), name
        assert got["fnac_weights"] == {"fns_audio": 100.0, "fns_visual": 100.0, "tne": 100.0}, name
        assert got["after_warmup"] == pytest.approx(100 * (2 + 3 + 5)) and got["batch_sizes"] == {batch}, name
    builtin = preset("paper_builtin")
    got = _trains(builtin)
    assert got["nce_only_epochs"] == [0, 1, 2] and got["batch_sizes"] == {128}
    assert math.isclose(got["fnac_weights"]["tne"] / 128, 100 / 128)
    assert builtin.dataset == "builtin" and builtin.visual_pretrain == "demo" and not builtin.options.detach_targets
    assert builtin.tau == 0.03 and builtin.visual_dropout == 0.9


def test_demo_and_smoke_train_what_the_readme_says():
    demo, smoke = _trains(preset("demo"), n_train=3000), _trains(preset("smoke"), n_train=192)
    assert demo["nce_only_epochs"] == [0, 1] and demo["fnac_weights"]["tne"] == 10.0 and demo["batch_sizes"] == {64}
    assert smoke["nce_only_epochs"] == [0] and smoke["batch_sizes"] == {32}


def test_oracle_diagnostics_are_built_in_only_and_study_knobs_are_checked():
    o = preset("smoke", nce_fn_mask="oracle", fn_targets="oracle", normalise_targets="yes", target_tau="0.2").options
    assert (o.nce_fn_mask, o.fn_targets, o.normalise_targets, o.target_tau) == ("oracle", "oracle", True, 0.2)
    defaults = TrainConfig(visual_pretrained=False).options
    assert (defaults.nce_fn_mask, defaults.fn_targets, defaults.normalise_targets, defaults.target_tau) == \
        ("none", "learned", False, None)
    for name in ("nce_fn_mask", "fn_targets"):
        with pytest.raises(ConfigError, match=f"^fnac.{name}='oracle': is a diagnostic that reads every clip's class"):
            preset("paper", **{name: "oracle"})
        with pytest.raises(ConfigError, match=f"^fnac.{name}='labels'"):
            preset("smoke", **{name: "labels"})
    for value in ("0", "-1", "inf"):
        with pytest.raises(ConfigError, match="^fnac.target_tau="):
            preset("smoke", target_tau=value)
