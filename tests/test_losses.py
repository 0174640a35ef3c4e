"""FNAC losses against a float64 implementation written out element by element from the formulas."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from fnac_lab.methods import build_method, weighted_total


def loss_terms(img, aud, labels=None, **settings):
    """The four terms of the ``fnac`` method built with ``settings`` (its options, and ``tau``)."""
    tau = settings.pop("tau", 0.03)
    return build_method("fnac", settings, tau=tau).terms(img, aud, labels=labels)


def _softmax_rows(a):
    out = torch.empty_like(a)
    for i in range(a.shape[0]):
        m = max(a[i, j] for j in range(a.shape[1]))
        e = torch.stack([torch.exp(a[i, j] - m) for j in range(a.shape[1])])
        out[i] = e / e.sum()
    return out


def _distance(p, q, kind):
    d = p - q
    if kind == "l1":
        return d.abs().sum() / d.numel()
    if kind == "l2":
        return (d * d).sum() / d.numel()
    small = d.abs() < 1.0
    return torch.where(small, 0.5 * d * d, d.abs() - 0.5).sum() / d.numel()


def reference_losses(img, aud, tau, threshold, kind, detach_targets=False, *, normalise_targets=False,
                     target_tau=None, labels=None, nce_fn_mask="none", fn_targets="learned"):
    """The paper's equations, one element at a time (no einsum, no library losses), with the study options and
    the oracle diagnostics written out the same way."""
    B, C, H, W = img.shape
    S = [[torch.stack([torch.stack([sum(img[b, c, h, w] * aud[k, c] for c in range(C)) / tau
                                    for w in range(W)]) for h in range(H)]) for k in range(B)] for b in range(B)]
    logits = torch.stack([torch.stack([S[b][k].max() for k in range(B)]) for b in range(B)])
    def kept(b, k):  # a pair stays in the NCE denominators unless the oracle mask drops it
        return nce_fn_mask == "none" or b == k or labels[b] != labels[k]

    def log_sum_exp(values):
        m = max(values)
        return m + torch.log(sum(torch.exp(x - m) for x in values))

    nce_rows = sum(-(logits[b, b] - log_sum_exp([logits[b, k] for k in range(B) if kept(b, k)]))
                   for b in range(B)) / B
    nce_cols = sum(-(logits[k, k] - log_sum_exp([logits[b, k] for b in range(B) if kept(b, k)]))
                   for k in range(B)) / B
    t = tau if target_tau is None else target_tau

    def unit(x):
        return torch.stack([x[i] / torch.sqrt(sum(x[i, c] ** 2 for c in range(C))) for i in range(B)])

    aud_t = aud.detach() if detach_targets else aud
    a_aud = torch.stack([torch.stack([sum(aud_t[i, c] * aud_t[j, c] for c in range(C)) / t for j in range(B)])
                         for i in range(B)])
    v = torch.stack([torch.stack([img[b, c].sum() / (H * W) for c in range(C)]) for b in range(B)])
    v = unit(v) if normalise_targets else v
    v_t = v.detach() if detach_targets else v
    a_img = torch.stack([torch.stack([sum(v_t[i, c] * v_t[j, c] for c in range(C)) / t for j in range(B)])
                         for i in range(B)])
    feats = []
    for b in range(B):
        own = S[b][b]
        lo, hi = own.min(), own.max()
        m = (own - lo) / (hi - lo + 1e-5)
        mask = m if threshold is None else (m > threshold).double()
        feats.append(torch.stack([(img[b, c] * mask).sum() / (H * W) for c in range(C)]))
    f = torch.stack(feats)
    f = unit(f) if normalise_targets else f
    a_fg = torch.stack([torch.stack([sum(f[i, c] * f[j, c] for c in range(C)) / t for j in range(B)])
                        for i in range(B)])
    p_aud, p_img, p_log, p_fg = (_softmax_rows(x) for x in (a_aud, a_img, logits, a_fg))
    if fn_targets == "oracle":  # each row uniform over the batch's samples of its class, itself included
        p_aud = torch.zeros(B, B, dtype=img.dtype)
        for i in range(B):
            members = [j for j in range(B) if labels[j] == labels[i]]
            for j in members:
                p_aud[i, j] = 1.0 / len(members)
        p_img = p_aud
    return {
        "nce": nce_rows + nce_cols,
        "fns_audio": _distance(p_aud, p_log, kind),
        "fns_visual": _distance(p_img, p_log, kind),
        "tne": _distance(p_aud, p_fg, kind),
    }


def assert_same_gradients(loss, ref, inputs, ref_inputs, name):
    """Gradients of ``loss`` and ``ref`` with respect to their inputs agree (an unused input counts as zero)."""
    got = torch.autograd.grad(loss, inputs, retain_graph=True, allow_unused=True)
    expected = torch.autograd.grad(ref, ref_inputs, retain_graph=True, allow_unused=True)
    for a, b, x in zip(got, expected, inputs):
        a = torch.zeros_like(x) if a is None else a
        b = torch.zeros_like(x) if b is None else b
        assert torch.allclose(a, b, rtol=1e-8, atol=1e-10), name


def _inputs(seed, B=5, C=4, H=3, W=3, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    img = F.normalize(torch.randn(B, C, H, W, generator=g, dtype=dtype), dim=1)
    aud = F.normalize(torch.randn(B, C, generator=g, dtype=dtype), dim=1)
    return img, aud


@pytest.mark.parametrize("kind", ["l1", "l2", "smooth_l1"])
@pytest.mark.parametrize("threshold", [0.6, 0.3, None])
@pytest.mark.parametrize("tau", [0.03, 0.5])
def test_values_and_gradients_match_reference(kind, threshold, tau):
    img, aud = _inputs(hash((kind, threshold, tau)) % 1000)
    img.requires_grad_(True)
    aud.requires_grad_(True)
    got = loss_terms(img, aud, tau=tau, tne_threshold=threshold, distance=kind)
    img_r = img.detach().clone().requires_grad_(True)
    aud_r = aud.detach().clone().requires_grad_(True)
    ref = reference_losses(img_r, aud_r, tau, threshold, kind)
    for name in ("nce", "fns_audio", "fns_visual", "tne"):
        assert got[name].dim() == 0
        assert torch.allclose(got[name], ref[name], rtol=1e-10, atol=1e-12), name
        grads = torch.autograd.grad(got[name], (img, aud), retain_graph=True)
        expected = torch.autograd.grad(ref[name], (img_r, aud_r), retain_graph=True)
        for a, b in zip(grads, expected):
            assert torch.allclose(a, b, rtol=1e-8, atol=1e-10), name


def test_float32_agrees_with_float64():
    img, aud = _inputs(3, B=16, C=32, H=7, W=7)
    f64 = loss_terms(img, aud)
    f32 = loss_terms(img.float(), aud.float())
    for name in f64:
        assert math.isclose(float(f32[name]), float(f64[name]), rel_tol=2e-4, abs_tol=1e-6), name


def test_nothing_detached_by_default():
    """Gradients flow into both sides of every term: the audio-audio target moves the audio embedding."""
    img, aud = _inputs(4)
    aud.requires_grad_(True)
    loss = loss_terms(img, aud)["fns_audio"]
    (g,) = torch.autograd.grad(loss, aud)
    # Only through the logits would leave the component along aud itself unchanged; compare against that.
    aud_d = aud.detach().clone().requires_grad_(True)
    loss_d = loss_terms(img, aud_d, detach_targets=True)["fns_audio"]
    (g_d,) = torch.autograd.grad(loss_d, aud_d)
    assert not torch.allclose(g, g_d)


def test_detached_targets_match_reference():
    img, aud = _inputs(5)
    img.requires_grad_(True)
    aud.requires_grad_(True)
    got = loss_terms(img, aud, detach_targets=True)
    img_r = img.detach().clone().requires_grad_(True)
    aud_r = aud.detach().clone().requires_grad_(True)
    ref = reference_losses(img_r, aud_r, 0.03, 0.6, "l1", detach_targets=True)
    for name in ("fns_audio", "fns_visual", "tne"):
        assert torch.allclose(got[name], ref[name], rtol=1e-10)
        # With the targets detached and a hard mask, TNE no longer depends on the audio at all.
        assert_same_gradients(got[name], ref[name], (img, aud), (img_r, aud_r), name)


def test_nce_is_chance_for_identical_embeddings():
    """All pairs equally similar: each cross-entropy is ln B, the symmetric sum 2 ln B."""
    B = 8
    img = F.normalize(torch.ones(B, 4, 2, 2, dtype=torch.float64), dim=1)
    aud = F.normalize(torch.ones(B, 4, dtype=torch.float64), dim=1)
    assert math.isclose(float(loss_terms(img, aud)["nce"]), 2 * math.log(B), rel_tol=1e-12)


def test_unknown_distance_is_refused():
    img, aud = _inputs(6)
    with pytest.raises(ValueError, match="distance"):
        loss_terms(img, aud, distance="cosine")


@pytest.mark.parametrize("option", [
    dict(normalise_targets=True),
    dict(target_tau=0.2),
    dict(normalise_targets=True, target_tau=0.07, detach_targets=True),
    dict(nce_fn_mask="oracle"),
    dict(fn_targets="oracle"),
    dict(nce_fn_mask="oracle", fn_targets="oracle", tne_threshold=None, distance="l2"),
])
def test_study_options_and_oracles_match_reference(option):
    """The study knobs and the label oracles against the element-by-element formulas, values and gradients."""
    img, aud = _inputs(7, B=6)
    labels = torch.tensor([0, 1, 0, 2, 1, 0])  # classes of 3, 2 and 1 members: every case of the oracle rows
    img.requires_grad_(True)
    aud.requires_grad_(True)
    kwargs = dict(option)
    threshold, kind = kwargs.pop("tne_threshold", 0.6), kwargs.pop("distance", "l1")
    got = loss_terms(img, aud, tau=0.1, tne_threshold=threshold, distance=kind, labels=labels, **kwargs)
    img_r = img.detach().clone().requires_grad_(True)
    aud_r = aud.detach().clone().requires_grad_(True)
    ref = reference_losses(img_r, aud_r, 0.1, threshold, kind, labels=labels.tolist(), **kwargs)
    for name in ("nce", "fns_audio", "fns_visual", "tne"):
        assert torch.allclose(got[name], ref[name], rtol=1e-10, atol=1e-12), name
        assert_same_gradients(got[name], ref[name], (img, aud), (img_r, aud_r), name)


def test_oracle_mask_with_one_class_per_sample_is_plain_nce():
    """No two samples share a class: nothing leaves the denominators, the value is NCE's to the last bit."""
    img, aud = _inputs(8)
    plain = loss_terms(img, aud)["nce"]
    masked = loss_terms(img, aud, labels=torch.arange(5), nce_fn_mask="oracle")["nce"]
    assert torch.equal(plain, masked)


def test_oracles_need_labels():
    img, aud = _inputs(9)
    for option in (dict(nce_fn_mask="oracle"), dict(fn_targets="oracle")):
        with pytest.raises(ValueError, match="labels"):
            loss_terms(img, aud, **option)


def test_total_weights_each_term_and_is_nce_alone_in_the_warm_up():
    """The loop's total of FNAC's terms: NCE plus each term times its own weight, a weight of 0 switching that term off,
    and NCE alone during the warm-up; the terms are reported either way."""
    img, aud = _inputs(10)
    ref = reference_losses(img, aud, 0.03, 0.6, "l1")
    method = build_method("fnac", dict(w_fns_audio=3.0, w_fns_visual=0.0, w_tne=0.5, warmup_epochs=2), tau=0.03)
    terms = method.terms(img, aud)
    total = weighted_total(terms, method.weights(2))
    assert torch.allclose(total, ref["nce"] + 3.0 * ref["fns_audio"] + 0.5 * ref["tne"], rtol=1e-10)
    assert torch.allclose(terms["fns_visual"], ref["fns_visual"], rtol=1e-10)  # switched off, still reported
    assert all(torch.equal(weighted_total(terms, method.weights(e)), terms["nce"]) for e in (0, 1))
    sim = torch.einsum("bchw,kc->bkhw", img, aud) / 0.03  # a caller's own similarity tensor gives the same terms
    assert all(torch.equal(v, method.terms(img, aud, sim=sim)[k]) for k, v in terms.items())
