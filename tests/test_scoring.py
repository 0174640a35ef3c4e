"""Evaluation of a model on a split: maps, scores, the reference maps and false-negative detection, each
against an independent computation (plain loops, numpy, scipy, scikit-learn)."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from fnac_lab.checkpoint import build_model
from fnac_lab.config import preset
from fnac_lab.scoring import centre_prior, evaluate_model, oracle_maps
from fnac_lab.metrics import gt_map, vggss_box_to_pixels
from fnac_lab.utils import normalise_images
from references import naive_ciou, naive_summary

CFG = dict(visual_stage=2, audio_stage=2, embed_dim=16, image_size=32, n_train=32, n_val=16, n_test=24)


@pytest.fixture(scope="module")
def setting():
    cfg = preset("smoke", **CFG)
    from fnac_lab.datasets import build_datasets

    torch.manual_seed(0)
    return cfg, build_model(cfg).eval(), build_datasets(cfg)["test"]


def test_centre_prior_is_the_stated_gaussian():
    prior = centre_prior(size=20, sigma=0.25).numpy()
    for y in range(20):
        for x in range(20):
            dx, dy = (x + 0.5) / 20 - 0.5, (y + 0.5) / 20 - 0.5
            assert prior[y, x] == pytest.approx(np.exp(-(dx * dx + dy * dy) / (2 * 0.25**2)), rel=1e-6)


def test_oracle_is_minus_the_distance_to_the_region():
    gt = torch.zeros(1, 12, 12)
    gt[0, 3:6, 7:10] = 1
    oracle = oracle_maps(gt)[0].numpy()
    inside = [(y, x) for y in range(12) for x in range(12) if gt[0, y, x] > 0]
    for y in range(12):
        for x in range(12):
            nearest = min(np.hypot(y - a, x - b) for a, b in inside)
            assert oracle[y, x] == pytest.approx(-nearest, abs=1e-6)


def test_scores_maps_and_baselines_against_per_sample_numpy(setting):
    cfg, model, test = setting
    result = evaluate_model(model, test, batch_size=10, keep_maps=True, progress=False, seed=3)
    batch = test.batch(list(range(len(test))))
    with torch.no_grad():
        img, aud = model((batch["image"].float() / 255 - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
                         / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), batch["spec"])
    cious, prior_cious, oracle_cious = [], [], []
    for i in range(len(test)):
        own = torch.einsum("chw,c->hw", img[i], aud[i]) / cfg.tau
        expected_map = F.interpolate(own[None, None], size=(224, 224), mode="bicubic", align_corners=False)[0, 0]
        torch.testing.assert_close(torch.from_numpy(result.maps[i]), expected_map, rtol=1e-4, atol=1e-4)
        gt = gt_map([vggss_box_to_pixels(test.boxes[i].tolist())]).numpy()
        cious.append(naive_ciou(result.maps[i], gt))
        prior_cious.append(naive_ciou(centre_prior().numpy(), gt))
        oracle_cious.append(naive_ciou(oracle_maps(torch.from_numpy(gt)[None])[0].numpy(), gt))
    np.testing.assert_allclose(result.cious.numpy(), cious, atol=1e-12)
    for key, value in naive_summary(cious).items():
        assert result.scores[key] == pytest.approx(value, abs=1e-12)
    assert result.reference_maps["centre_prior"]["ap50"] == pytest.approx(naive_summary(prior_cious)["ap50"], abs=1e-12)
    assert result.reference_maps["oracle"]["mean_ciou"] == pytest.approx(naive_summary(oracle_cious)["mean_ciou"], abs=1e-12)
    assert result.labels == test.labels.tolist() and result.ids == test.ids


def test_embeddings_and_false_negative_detection(setting):
    cfg, model, test = setting
    result = evaluate_model(model, test, batch_size=7, reference_maps=False, progress=False, embeddings=True,
                            tne_threshold=0.6)
    batch = test.batch(list(range(len(test))))
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        img, aud = model((batch["image"].float() / 255 - mean) / std, batch["spec"])
    labels = test.labels.numpy()
    for i in range(len(test)):
        own = torch.einsum("chw,c->hw", img[i], aud[i]) / cfg.tau
        norm = (own - own.min()) / (own.max() - own.min() + 1e-5)
        f = (img[i] * (norm > 0.6).float()).mean(dim=(1, 2))  # divided by all h * w cells, as published
        torch.testing.assert_close(torch.from_numpy(result.embeddings["foreground"][i]), f, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(torch.from_numpy(result.embeddings["visual"][i]), img[i].mean(dim=(1, 2)),
                                   rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(torch.from_numpy(result.embeddings["audio"][i]), aud[i], rtol=1e-4, atol=1e-5)
    found = result.fn_auroc(max_samples=20)
    for name, x in result.embeddings.items():
        scores, same = [], []
        for i in range(20):
            for j in range(i + 1, 20):
                a, b = x[i].astype(np.float64), x[j].astype(np.float64)
                scores.append(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
                same.append(labels[i] == labels[j])
        assert found[f"fn_auroc_{name}"] == pytest.approx(roc_auc_score(same, scores), abs=1e-9), name
    # the cross-modal logits NCE contrasts: max over cells of <img[i], aud[j]>, symmetrised, from the model's output
    scores, same = [], []
    for i in range(20):
        for j in range(i + 1, 20):
            l_ij = float(torch.einsum("chw,c->hw", img[i].double(), aud[j].double()).max())
            l_ji = float(torch.einsum("chw,c->hw", img[j].double(), aud[i].double()).max())
            scores.append((l_ij + l_ji) / 2)
            same.append(labels[i] == labels[j])
    assert found["fn_auroc_cross"] == pytest.approx(roc_auc_score(same, scores), abs=1e-4)
    result.labels = [""] * len(result.labels)  # real data without classes: no detection figures, not zeros
    assert result.fn_auroc() == {}


class _FixedObjects(torch.nn.Module):
    """An object network whose map is a horizontal ramp, whatever the image."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        ramp = torch.linspace(0, 1, 224)
        return ramp.expand(image.shape[0], 224, 224).clone()


def _naive_minmax(x: np.ndarray) -> np.ndarray:
    return (x - x.min()) / (x.max() - x.min()) if x.max() > x.min() else np.zeros_like(x)


def test_the_shared_scoring_loop_against_per_sample_numpy(setting):
    """``score_batches``, which both evaluation paths run: the model's cIoU, the OGL fused map's, each map's
    confidence and the random map's cIoU, per sample and in the batches' order, against numpy loops."""
    from fnac_lab.scoring import ground_truth, score_batches

    cfg, model, ds = setting
    order = [[5, 2, 9], [0, 7], [11, 3, 1]]  # out of order: the loop keeps the batches' order and their positions
    batches = [{**ds.batch(idx), "index": idx} for idx in order]
    scored = score_batches(model, iter(batches), total=3, device=torch.device("cpu"),
                           generator=torch.Generator().manual_seed(4), confidences=True, keep_maps=True,
                           ground_truth=lambda b: ground_truth(ds, b["index"], b, torch.device("cpu")),
                           object_network=_FixedObjects(), progress=False)
    flat = [i for idx in order for i in idx]
    assert scored.order == flat and scored.ids == [ds.batch([i])["id"][0] for i in flat]
    assert [flat[k] for k in scored.set_order()] == sorted(flat)  # back in the set's order
    assert scored.set_positions().tolist() == sorted(flat)
    noise = torch.Generator().manual_seed(4)
    draws = np.concatenate([torch.rand(len(idx), 224, 224, generator=noise).numpy() for idx in order])
    ramp = np.linspace(0, 1, 224, dtype=np.float32)[None, :].repeat(224, 0)
    with torch.no_grad():
        av_maps = np.concatenate([model.localise(normalise_images(b["image"]), b["spec"].float()).numpy()
                                  for b in batches])
    gts = np.concatenate([ground_truth(ds, b["index"], b, torch.device("cpu")).numpy() for b in batches])
    for k, (av, gt) in enumerate(zip(av_maps, gts)):
        np.testing.assert_array_equal(scored.maps[k], av)
        assert scored.columns["ciou"][k].item() == pytest.approx(naive_ciou(av, gt), abs=1e-12)
        fused = _naive_minmax(0.4 * _naive_minmax(av) + 0.6 * ramp)
        assert scored.columns["ciou_ogl"][k].item() == pytest.approx(naive_ciou(fused, gt), abs=1e-12)
        s = np.sort(((av.astype(np.float64) * model.tau + 1) / 2).ravel())[::-1]
        assert scored.columns["confidence"][k].item() == pytest.approx(s[: -(-s.size // 4)].mean(), rel=1e-9)
        assert scored.reference_maps["random"]["ciou"][k].item() == pytest.approx(naive_ciou(draws[k], gt), abs=1e-12)
        r = np.sort(draws[k].astype(np.float64).ravel())[::-1]
        assert scored.reference_maps["random"]["confidence"][k].item() == pytest.approx(r[: -(-r.size // 4)].mean(),
                                                                                 rel=1e-9)
    assert set(scored.reference_maps) == {"centre_prior", "random", "oracle"}
    assert "confidence" not in scored.reference_maps["oracle"]

    # Without ground truth (negatives) only the confidences are kept, and the same draws give the same values.
    plain = score_batches(model, iter(batches), total=3, device=torch.device("cpu"),
                          generator=torch.Generator().manual_seed(4), progress=False)
    assert set(plain.columns) == {"confidence"} and set(plain.reference_maps) == {"centre_prior", "random"}
    np.testing.assert_array_equal(plain.columns["confidence"].numpy(), scored.columns["confidence"].numpy())
    np.testing.assert_array_equal(plain.reference_maps["random"]["confidence"].numpy(),
                                  scored.reference_maps["random"]["confidence"].numpy())


def test_both_evaluation_paths_run_the_shared_loop(setting, monkeypatch):
    """``evaluate_model`` (built-in splits), ``score_negatives`` and the real test sets' ``evaluate_testset`` and
    ``score_real_negatives`` all score through ``score_batches``: replacing it reaches every one."""
    import fnac_lab.benchmark_evaluation as benchmark_evaluation
    import fnac_lab.scoring as scoring

    calls = []

    def recording(*args, **kwargs):
        calls.append(kwargs["desc"])
        raise RuntimeError("reached")

    monkeypatch.setattr(scoring, "score_batches", recording)
    monkeypatch.setattr(benchmark_evaluation, "score_batches", recording)
    _, model, ds = setting
    for run in (lambda: scoring.evaluate_model(model, ds, progress=False, desc="model"),
                lambda: scoring.score_negatives(model, ds, progress=False, desc="negatives")):
        with pytest.raises(RuntimeError, match="reached"):
            run()
    assert calls == ["model", "negatives"]
    for name in ("evaluate_testset", "score_real_negatives"):  # a real set needs files; the source says it
        assert "score_batches(" in inspect.getsource(getattr(benchmark_evaluation, name))
