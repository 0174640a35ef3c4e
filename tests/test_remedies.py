"""The label-free false-negative remedies and their oracle bound (fnac_lab.methods: fn_elimination, fn_attraction,
debiased_nce, hard_negative_nce, supcon_oracle): detection, each loss and each method's term against float64 loops
over the batch, written from the papers' equations; the warm-up equal to the NCE twin's to the last digit."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from fnac_lab.coercion import ConfigError
from fnac_lab.config import preset
from fnac_lab.losses import (detect_false_negatives, detection_similarity, multi_positive_nce,
                             reweighted_negative_nce)
from fnac_lab.methods import build_method
from fnac_lab.train import train

REMEDIES = ("fn_elimination", "fn_attraction", "debiased_nce", "hard_negative_nce", "supcon_oracle")


def batch(seed: int = 0, b: int = 8):
    g = torch.Generator().manual_seed(seed)
    img = F.normalize(torch.randn(b, 6, 3, 3, generator=g, dtype=torch.float64), dim=1)
    aud = F.normalize(torch.randn(b, 6, generator=g, dtype=torch.float64), dim=1)
    return img, aud, torch.tensor([0, 1, 0, 2, 1, 3, 3, 0][:b])


def naive_logits(img, aud, tau):
    b, _, h, w = img.shape
    return [[max(float(img[i, :, y, x] @ aud[k]) / tau for y in range(h) for x in range(w)) for k in range(b)]
            for i in range(b)]


def cos(u, v):
    return float(u @ v) / (math.sqrt(float(u @ u)) * math.sqrt(float(v @ v)))


def naive_masked_nce(logits, removed):
    """``removed[i][k]``: pair (i, k) is neither positive nor negative."""
    b = len(logits)
    rows = [-logits[i][i] + math.log(sum(math.exp(logits[i][k]) for k in range(b) if not removed[i][k]))
            for i in range(b)]
    cols = [-logits[i][i] + math.log(sum(math.exp(logits[k][i]) for k in range(b) if not removed[k][i]))
            for i in range(b)]
    return sum(rows) / b + sum(cols) / b


def naive_multi_positive(logits, positive):
    b = len(logits)

    def side(lg):
        total = 0.0
        for i in range(b):
            norm = math.log(sum(math.exp(lg[i][k]) for k in range(b)))
            ps = [p for p in range(b) if p == i or positive[i][p]]
            total += -sum(lg[i][p] - norm for p in ps) / len(ps)
        return total / b

    return side(logits) + side([list(r) for r in zip(*logits)])


def naive_reweighted(logits, tau, tau_plus, beta):
    b = len(logits)
    n = b - 1

    def side(lg):
        total = 0.0
        for i in range(b):
            pos = math.exp(lg[i][i])
            others = [k for k in range(b) if k != i]
            w = [math.exp(beta * lg[i][k]) for k in others]
            neg = [math.exp(lg[i][k]) for k in others]
            reweighted = n * sum(wk * nk for wk, nk in zip(w, neg)) / sum(w)
            ng = max((reweighted - n * tau_plus * pos) / (1 - tau_plus), n * math.exp(-1 / tau))
            total += -math.log(pos / (pos + ng))
        return total / b

    return side(logits) + side([list(r) for r in zip(*logits)])


def naive_detection(sim, rule, k, threshold):
    b = len(sim)
    nearest = [[False] * b for _ in range(b)]
    for i in range(b):
        order = sorted((j for j in range(b) if j != i), key=lambda j: -sim[i][j])
        for j in order[:k]:
            nearest[i][j] = True
    if rule == "threshold":
        return [[i != j and sim[i][j] > threshold for j in range(b)] for i in range(b)]
    if rule == "topk":
        return [[nearest[i][j] or nearest[j][i] for j in range(b)] for i in range(b)]
    return [[nearest[i][j] and nearest[j][i] for j in range(b)] for i in range(b)]


@pytest.mark.parametrize("rule", ["topk", "threshold", "reciprocal"])
@pytest.mark.parametrize("k", [1, 3])
def test_detection_rules_match_a_loop(rule, k):
    img, aud, _ = batch(3)
    sim = detection_similarity(img, aud, "audio", tau=0.1)
    got = detect_false_negatives(sim, rule, k=k, threshold=0.3)
    want = naive_detection(sim.tolist(), rule, k, 0.3)
    assert got.tolist() == want and not got.diagonal().any() and torch.equal(got, got.t())


def test_detection_similarities_are_the_cosines_they_name():
    img, aud, _ = batch(1)
    b = len(aud)
    v = img.mean(dim=(2, 3))
    audio = [[cos(aud[i], aud[j]) for j in range(b)] for i in range(b)]
    visual = [[cos(v[i], v[j]) for j in range(b)] for i in range(b)]
    torch.testing.assert_close(detection_similarity(img, aud, "audio", tau=0.1), torch.tensor(audio, dtype=torch.float64))
    torch.testing.assert_close(detection_similarity(img, aud, "visual", tau=0.1), torch.tensor(visual, dtype=torch.float64))
    product = [[max(audio[i][j], 0) * max(visual[i][j], 0) for j in range(b)] for i in range(b)]
    torch.testing.assert_close(detection_similarity(img, aud, "product", tau=0.1),
                               torch.tensor(product, dtype=torch.float64))
    # foreground: the cells where a sample's own map, min-max normalised (+1e-5), exceeds the threshold, / (h w)
    tau, thr = 0.1, 0.6
    fg = []
    for i in range(b):
        own = [[float(img[i, :, y, x] @ aud[i]) / tau for x in range(3)] for y in range(3)]
        lo, hi = min(map(min, own)), max(map(max, own))
        keep = [[(own[y][x] - lo) / (hi - lo + 1e-5) > thr for x in range(3)] for y in range(3)]
        fg.append(sum(img[i, :, y, x] for y in range(3) for x in range(3) if keep[y][x]) / 9)
    foreground = [[cos(fg[i], fg[j]) for j in range(b)] for i in range(b)]
    torch.testing.assert_close(detection_similarity(img, aud, "foreground", tau=tau, tne_threshold=thr),
                               torch.tensor(foreground, dtype=torch.float64))


def test_multi_positive_nce_matches_a_loop_and_is_nce_without_positives():
    img, aud, labels = batch(2)
    logits = torch.tensor(naive_logits(img, aud, 0.1), dtype=torch.float64)
    positive = (labels[:, None] == labels[None, :]) & ~torch.eye(len(labels), dtype=torch.bool)
    got = multi_positive_nce(logits, positive)
    assert float(got) == pytest.approx(naive_multi_positive(logits.tolist(), positive.tolist()), rel=1e-12)
    none = torch.zeros_like(positive)
    assert float(multi_positive_nce(logits, none)) == pytest.approx(naive_masked_nce(logits.tolist(),
                                                                                      none.tolist()), rel=1e-12)


@pytest.mark.parametrize("tau_plus, beta", [(0.0, 0.0), (0.1, 0.0), (0.0, 1.0), (0.2, 0.5)])
@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_reweighted_negative_nce_matches_a_loop(tau_plus, beta, tau):
    img, aud, _ = batch(4)
    logits = torch.tensor(naive_logits(img, aud, tau), dtype=torch.float64)
    got = reweighted_negative_nce(logits, tau=tau, tau_plus=tau_plus, beta=beta)
    assert float(got) == pytest.approx(naive_reweighted(logits.tolist(), tau, tau_plus, beta), rel=1e-12)


def test_the_debiased_clamp_binds_when_the_prior_is_large():
    """With a large ``tau_plus`` the corrected negative term falls below its floor ``N exp(-1 / tau)``: the loop and
    the function both take the floor."""
    img, aud, _ = batch(5)
    logits = torch.tensor(naive_logits(img, aud, 0.5), dtype=torch.float64)
    got = reweighted_negative_nce(logits, tau=0.5, tau_plus=0.9)
    assert float(got) == pytest.approx(naive_reweighted(logits.tolist(), 0.5, 0.9, 0.0), rel=1e-12)


@pytest.mark.parametrize("options", [{}, {"rule": "threshold", "threshold": 0.2, "detect_from": "visual"},
                                     {"rule": "reciprocal", "k": 2, "detect_from": "product"}])
def test_elimination_and_attraction_terms_match_loops(options):
    img, aud, labels = batch(6)
    tau = 0.1
    logits = naive_logits(img, aud, tau)
    source = options.get("detect_from", "audio")
    sim = detection_similarity(img, aud, source, tau=tau).tolist()
    detected = naive_detection(sim, options.get("rule", "topk"), options.get("k", 1), options.get("threshold", 0.9))
    elim = build_method("fn_elimination", options, tau=tau).terms(img, aud)
    attr = build_method("fn_attraction", options, tau=tau).terms(img, aud)
    assert float(elim["fn_elimination"]) == pytest.approx(naive_masked_nce(logits, detected), rel=1e-12)
    assert float(attr["fn_attraction"]) == pytest.approx(naive_multi_positive(logits, detected), rel=1e-12)
    assert float(elim["nce"]) == pytest.approx(naive_masked_nce(logits, [[False] * 8] * 8), rel=1e-12)


def test_debiased_hard_negative_and_oracle_terms_match_loops():
    img, aud, labels = batch(7)
    tau = 0.2
    logits = naive_logits(img, aud, tau)
    debiased = build_method("debiased_nce", {"tau_plus": 0.15}, tau=tau).terms(img, aud)["debiased_nce"]
    hard = build_method("hard_negative_nce", {"beta": 0.7, "tau_plus": 0.05}, tau=tau).terms(img, aud)
    oracle = build_method("supcon_oracle", None, tau=tau).terms(img, aud, labels=labels)["supcon_oracle"]
    same = [[i != j and int(labels[i]) == int(labels[j]) for j in range(8)] for i in range(8)]
    assert float(debiased) == pytest.approx(naive_reweighted(logits, tau, 0.15, 0.0), rel=1e-12)
    assert float(hard["hard_negative_nce"]) == pytest.approx(naive_reweighted(logits, tau, 0.05, 0.7), rel=1e-12)
    assert float(oracle) == pytest.approx(naive_multi_positive(logits, same), rel=1e-12)


@pytest.mark.parametrize("name", REMEDIES)
def test_a_remedy_minimises_nce_in_its_warm_up_and_its_own_term_after(name):
    method = build_method(name, {"warmup_epochs": 2}, tau=0.1)
    assert method.weights(0) == method.weights(1) == {"nce": 1.0}
    assert method.weights(2) == {name: 1.0} and method.warmup_epochs == 2


@pytest.mark.parametrize("name", ["fn_elimination", "debiased_nce"])
def test_a_remedys_warm_up_is_its_nce_twins_to_the_last_digit(name, tmp_path):
    """One warm-up epoch and one with the remedy: the first epoch's losses equal the NCE twin's exactly."""
    tiny = dict(n_train=32, n_val=16, n_test=16, batch_size=16, eval_batch_size=16, epochs=2)
    twin = train(preset("smoke", method="nce", **tiny), tmp_path / "nce", progress=False)
    remedy = train(preset("smoke", method=name, **tiny, **{f"{name}.warmup_epochs": 1}), tmp_path / name,
                   progress=False)
    assert remedy.history[0]["loss"] == twin.history[0]["loss"] == remedy.history[0]["nce"]
    assert remedy.history[1]["loss"] == remedy.history[1][name] != twin.history[1]["loss"]


def test_remedy_options_are_checked_in_one_line():
    for name, options, says in [("fn_elimination", {"rule": "nearest"}, r"^fn_elimination\.rule='nearest': must be"),
                                ("fn_attraction", {"k": 0}, r"^fn_attraction\.k=0: must be a positive"),
                                ("fn_elimination", {"threshold": 2}, r"^fn_elimination\.threshold=2\.0: must be a cos"),
                                ("debiased_nce", {"tau_plus": 1}, r"^debiased_nce\.tau_plus=1\.0: must be in"),
                                ("hard_negative_nce", {"beta": -1}, r"^hard_negative_nce\.beta=-1\.0: must be"),
                                ("supcon_oracle", {"warmup_epochs": -1}, r"^supcon_oracle\.warmup_epochs=-1: must")]:
        with pytest.raises(ConfigError, match=says) as info:
            build_method(name, options, tau=0.1)
        assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match=r"^method='supcon_oracle': is a diagnostic that reads every clip"):
        preset("paper", method="supcon_oracle")
    with pytest.raises(ConfigError, match=r"^fn_elimination\.warmup_epochs=2 with epochs=2: the remedy would never"):
        build_method("fn_elimination", None, tau=0.1).check_epochs(2)


def test_detection_is_monitored_against_the_labels_pooled_over_the_epoch(tmp_path):
    img, aud, labels = batch(8)
    method = build_method("fn_elimination", {"k": 2}, tau=0.1)
    detected = naive_detection(detection_similarity(img, aud, "audio", tau=0.1).tolist(), "topk", 2, 0.9)
    same = [[i != j and int(labels[i]) == int(labels[j]) for j in range(8)] for i in range(8)]
    hits = sum(detected[i][j] and same[i][j] for i in range(8) for j in range(8))
    counts = {k: float(v) for k, v in method.monitor(img, aud, labels).items()}
    assert counts == {"detected": sum(map(sum, detected)), "detected_same_class": hits, "same_class": sum(map(sum, same)),
                      "pairs": 8 * 7}
    record = method.monitor_record({k: 2 * v for k, v in counts.items()})
    assert record == {"fn_precision": hits / sum(map(sum, detected)), "fn_recall": hits / sum(map(sum, same)),
                      "fn_detected_share": sum(map(sum, detected)) / (8 * 7)}
    tiny = dict(n_train=32, n_val=16, n_test=16, batch_size=16, eval_batch_size=16, epochs=2)
    run = train(preset("smoke", method="fn_attraction", **tiny, **{"fn_attraction.warmup_epochs": 1}), tmp_path,
                progress=False)
    assert all(0 <= r[k] <= 1 for r in run.history for k in ("fn_precision", "fn_recall", "fn_detected_share"))
    assert "fn_precision" not in train(preset("smoke", method="nce", **tiny), tmp_path / "nce", progress=False).history[0]
