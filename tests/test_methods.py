"""The contract every registered method keeps (fnac_lab.methods): it builds from its defaults, refuses a bad option
in one line, gives finite terms and gradients on a toy batch, is deterministic, and survives a checkpoint round
trip and a resume. Then the built-in methods' own equations, against float64 loops over the batch."""

from __future__ import annotations

import dataclasses
import json
import math
import typing

import pytest
import torch
import torch.nn.functional as F

from fnac_lab.coercion import ConfigError, base_type
from fnac_lab.config import TrainConfig, preset
from fnac_lab.methods import METHODS, build_method, weighted_total
from fnac_lab.methods.settings import FLAT_OPTION_KEYS
from fnac_lab.train import train

#: A small built-in run that every method trains.
TINY = dict(n_train=32, n_val=16, n_test=16, batch_size=16, eval_batch_size=16)


def toy_batch(seed: int = 0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    img = F.normalize(torch.randn(8, 16, 4, 4, generator=g, dtype=dtype), dim=1)
    aud = F.normalize(torch.randn(8, 16, generator=g, dtype=dtype), dim=1)
    return img, aud, torch.tensor([0, 1, 0, 2, 1, 3, 3, 0])


@pytest.mark.parametrize("name", sorted(METHODS))
def test_builds_from_its_defaults_and_refuses_bad_options_in_one_line(name):
    cls = METHODS[name]
    method = build_method(name, None, tau=0.1)
    assert isinstance(method.options, cls.options_class) and method.label and method.term_labels
    assert set(method.weights(0)) <= set(method.term_labels)
    with pytest.raises(ConfigError, match=rf"^unknown setting {name}\.no_such_option: ") as info:
        build_method(name, {"no_such_option": 1}, tau=0.1)
    assert "\n" not in str(info.value)
    hints = typing.get_type_hints(cls.options_class)
    for option in cls.options_class.names():
        if base_type(hints[option])[0] in (int, float, bool):
            with pytest.raises(ConfigError, match=rf"^{name}\.{option}") as info:
                build_method(name, {option: "not a value"}, tau=0.1)
            assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_terms_are_finite_with_finite_gradients_and_deterministic(name):
    method = build_method(name, None, tau=0.1)
    img, aud, labels = toy_batch()
    img.requires_grad_(True)
    aud.requires_grad_(True)
    terms = method.terms(img, aud, labels=labels)
    assert list(terms) == list(method.term_labels)
    assert all(t.dim() == 0 and math.isfinite(float(t.detach())) for t in terms.values())
    last = max(method.warmup_epochs, 0)
    weighted_total(terms, method.weights(last)).backward()
    assert torch.isfinite(img.grad).all() and torch.isfinite(aud.grad).all() and img.grad.abs().sum() > 0
    again = method.terms(img.detach(), aud.detach(), labels=labels)
    assert all(torch.equal(again[k], terms[k].detach()) for k in terms)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_configuration_round_trips_through_its_record(name):
    cfg = preset("smoke", method=name)
    record = json.loads(json.dumps(cfg.to_dict()))
    assert TrainConfig.from_dict(record) == cfg and record["method"] == name and name in record
    assert cfg.replace(**{f"{name}.{k}": v for k, v in cfg.options.to_dict().items()}) == cfg


@pytest.mark.parametrize("name", sorted(METHODS))
def test_a_resumed_run_equals_an_uninterrupted_one(name, tmp_path):
    options = preset("smoke", method=name, **TINY).options
    short = {f"{name}.warmup_epochs": 1} if hasattr(options, "warmup_epochs") else {}  # fewer epochs to train
    cut = preset("smoke", method=name, **TINY, **short).build_method().warmup_epochs + 1  # its own terms have joined
    cfg = preset("smoke", method=name, epochs=cut + 1, **TINY, **short)
    whole = train(cfg, tmp_path / "whole", progress=False)
    train(cfg.replace(epochs=cut), tmp_path / "cut", progress=False)
    resumed = train(cfg, tmp_path / "cut", progress=False)

    def strip(history):
        return [{k: v for k, v in r.items() if k != "train_seconds"} for r in history]

    assert strip(resumed.history) == strip(whole.history) and resumed.summary == whole.summary
    assert all(t in whole.history[-1] for t in METHODS[name].term_labels)


def test_fnac_with_its_weights_at_zero_trains_exactly_what_nce_trains(tmp_path):
    """A record of an earlier version names a twin by FNAC's three weights at 0: it reads as ``fnac`` and trains what
    the ``nce`` method trains: to the last digit in the warm-up, and up to the order in which the backward pass adds
    the switched-off terms' zero gradients after it."""
    flat = {"w_fns_audio": 0, "w_fns_visual": 0, "w_tne": 0}
    assert set(flat) <= set(FLAT_OPTION_KEYS)
    zero = train(preset("smoke", epochs=2, **TINY, **flat), tmp_path / "zero", progress=False)
    nce = train(preset("smoke", epochs=2, **TINY, method="nce"), tmp_path / "nce", progress=False)
    assert (zero.history[0]["nce"], zero.history[0]["loss"]) == (nce.history[0]["nce"], nce.history[0]["loss"])
    assert zero.history[1]["loss"] == pytest.approx(nce.history[1]["loss"], rel=1e-5)


def naive_nce(logits):
    b = len(logits)
    rows = [-logits[i][i] + math.log(sum(math.exp(logits[i][k]) for k in range(b))) for i in range(b)]
    cols = [-logits[i][i] + math.log(sum(math.exp(logits[k][i]) for k in range(b))) for i in range(b)]
    return sum(rows) / b + sum(cols) / b


def naive_logits(img, aud, tau):
    b, _, h, w = img.shape
    return [[max(float(img[i, :, y, x] @ aud[k]) / tau for y in range(h) for x in range(w)) for k in range(b)]
            for i in range(b)]


def test_nce_is_symmetric_infonce_over_max_pooled_logits():
    img, aud, labels = toy_batch(1, torch.float64)
    got = build_method("nce", None, tau=0.1).terms(img, aud)["nce"]
    assert float(got) == pytest.approx(naive_nce(naive_logits(img, aud, 0.1)), rel=1e-10)
    masked = build_method("nce", {"nce_fn_mask": "oracle"}, tau=0.1).terms(img, aud, labels=labels)["nce"]
    logits = naive_logits(img, aud, 0.1)
    b = len(logits)
    keep = [[k == i or int(labels[k]) != int(labels[i]) for k in range(b)] for i in range(b)]
    rows = [-logits[i][i] + math.log(sum(math.exp(logits[i][k]) for k in range(b) if keep[i][k])) for i in range(b)]
    cols = [-logits[i][i] + math.log(sum(math.exp(logits[k][i]) for k in range(b) if keep[k][i])) for i in range(b)]
    assert float(masked) == pytest.approx(sum(rows) / b + sum(cols) / b, rel=1e-10)


def test_a_method_that_reads_labels_is_refused_on_data_without_them():
    with pytest.raises(ConfigError, match=r"^nce\.nce_fn_mask='oracle': is a diagnostic that reads every clip"):
        preset("paper", method="nce", **{"nce.nce_fn_mask": "oracle"})


def test_options_dataclasses_are_frozen_and_named_after_their_method():
    for name, cls in METHODS.items():
        assert cls.name == name and cls.options_class.method == name
        assert dataclasses.is_dataclass(cls.options_class) and cls.options_class.__dataclass_params__.frozen
