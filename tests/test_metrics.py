"""Localisation metrics against a per-sample numpy evaluator following the published conventions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fnac_lab import metrics
from fnac_lab.metrics import same_class_auroc
from references import naive_ciou, naive_gt, naive_summary


def _maps(n, seed, kind):
    g = torch.Generator().manual_seed(seed)
    if kind == "smooth":  # a 7 x 7 map upsampled like a real localisation map
        small = torch.randn(n, 1, 7, 7, generator=g)
        return F.interpolate(small, size=224, mode="bicubic", align_corners=False)[:, 0]
    if kind == "quantised":  # many ties at the threshold
        return torch.randint(0, 4, (n, 224, 224), generator=g).float()
    if kind == "constant":
        return torch.full((n, 224, 224), 0.3)
    raise ValueError(kind)


def _random_boxes(rng, n):
    boxes = []
    for _ in range(n):
        x0, y0 = rng.integers(0, 200, size=2)
        x1, y1 = x0 + rng.integers(1, 224 - x0 + 1), y0 + rng.integers(1, 224 - y0 + 1)
        boxes.append((int(x0), int(y0), int(x1), int(y1)))
    return boxes


@pytest.mark.parametrize("kind", ["smooth", "quantised", "constant"])
@pytest.mark.parametrize("mode", ["vggss", "flickr"])
def test_ciou_matches_per_sample_evaluator(kind, mode):
    rng = np.random.default_rng(0)
    maps = _maps(12, 1, kind)
    boxes = [_random_boxes(rng, rng.integers(1, 4)) for _ in range(12)]
    gts = torch.stack([metrics.gt_map(b, mode=mode) for b in boxes])
    got = metrics.ciou(maps, gts)
    assert got.dtype == torch.float64 and got.shape == (12,)
    for i in range(12):
        assert got[i].item() == pytest.approx(naive_ciou(maps[i].numpy(), naive_gt(boxes[i], mode)), abs=1e-12)


def test_single_map_and_low_precision_inputs():
    maps = _maps(3, 2, "smooth")
    gt = metrics.gt_map([(30, 40, 150, 200)])
    ref = naive_ciou(maps[0].numpy(), gt.numpy())
    assert metrics.ciou(maps[0], gt).item() == pytest.approx(ref, abs=1e-12)
    # half-precision maps are scored in float32, as the published evaluator would see them
    half = maps[0].to(torch.bfloat16)
    assert metrics.ciou(half, gt).item() == pytest.approx(naive_ciou(half.float().numpy(), gt.numpy()), abs=1e-12)


def test_ties_at_threshold_are_included():
    """A map that is 1 on a quarter of the pixels and 0 elsewhere: the median is 0, so every pixel is predicted."""
    pred = torch.zeros(224, 224)
    pred[:112, :112] = 1
    gt = metrics.gt_map([(0, 0, 112, 112)])
    assert metrics.ciou(pred, gt).item() == pytest.approx(112 * 112 / 224**2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
@pytest.mark.parametrize("kind", ["smooth", "quantised"])
def test_median_threshold_is_the_sorted_element(kind, dtype):
    """Both selection paths (numpy on CPU float32 / float64, torch otherwise) pick sort(p)[floor(H*W/2)]."""
    maps = _maps(6, 11, kind).to(dtype)
    flat = maps.flatten(1).float().numpy()
    expected = np.sort(flat, axis=1)[:, flat.shape[1] // 2]
    np.testing.assert_array_equal(metrics.median_threshold(maps).float().numpy(), expected)


def test_gt_maps_from_real_vggss_boxes(vggss_annotations):
    rng = np.random.default_rng(1)
    sample = [vggss_annotations[i] for i in rng.choice(len(vggss_annotations), 200, replace=False)]
    maps = _maps(len(sample), 3, "smooth")
    gts, refs = [], []
    for entry, m in zip(sample, maps):
        pixels = [metrics.vggss_box_to_pixels(b) for b in entry["bbox"]]
        naive_pixels = [tuple((np.clip(np.array(b, dtype=float), 0, 1) * 224).astype(int)) for b in entry["bbox"]]
        assert pixels == [tuple(int(v) for v in p) for p in naive_pixels]
        gt = metrics.gt_map(pixels, mode="vggss")
        assert np.array_equal(gt.numpy(), naive_gt(naive_pixels, "vggss"))
        gts.append(gt)
        refs.append(naive_ciou(m.numpy(), gt.numpy()))
    got = metrics.ciou(maps, torch.stack(gts))
    np.testing.assert_allclose(got.numpy(), refs, atol=1e-12)
    summary = metrics.summarise(got)
    expected = naive_summary(refs)
    for k in expected:
        assert summary[k] == pytest.approx(expected[k], abs=1e-12)


def test_flickr_box_scaling_and_consensus():
    boxes_256 = [(10, 20, 200, 250), (0, 0, 128, 128), (100, 100, 256, 256)]
    pixels = [metrics.flickr_box_to_pixels(b) for b in boxes_256]
    assert pixels == [tuple(int(224 * v / 256) for v in b) for b in boxes_256]
    gt = metrics.gt_map(pixels, mode="flickr").numpy()
    assert np.array_equal(gt, naive_gt(pixels, "flickr"))
    assert set(np.unique(gt)) <= {0.0, 0.5, 1.0}
    assert metrics.gt_map(pixels[:1], mode="flickr").max() == 0.5


def test_summary_at_threshold_boundaries():
    values = [0.5, 0.49999999, 0.15, 0.05 * 3, 1.0, 0.0, 0.7]
    got = metrics.summarise(values)
    expected = naive_summary(values)
    for k in expected:
        assert got[k] == pytest.approx(expected[k], abs=1e-15)
    assert got["ap50"] == pytest.approx(3 / 7)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="NaN"):
        metrics.ciou(torch.full((224, 224), float("nan")), metrics.gt_map([(0, 0, 5, 5)]))
    with pytest.raises(ValueError, match="shape"):
        metrics.ciou(torch.zeros(2, 224, 224), torch.zeros(3, 224, 224))
    with pytest.raises(ValueError):
        metrics.summarise([])
    with pytest.raises(ValueError, match="mode"):
        metrics.gt_map([(0, 0, 1, 1)], mode="coco")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    maps = torch.cat([_maps(8, 4, "smooth"), _maps(8, 5, "quantised"), _maps(2, 0, "constant")])
    rng = np.random.default_rng(2)
    gts = torch.stack([metrics.gt_map(_random_boxes(rng, 2)) for _ in range(len(maps))])
    cpu = metrics.ciou(maps, gts)
    gpu = metrics.ciou(maps.cuda(), gts.cuda())
    assert torch.equal(cpu, gpu.cpu())


def naive_same_class_auroc(x: np.ndarray, labels) -> float:
    """Mann-Whitney, pair by pair: the share of (same-class pair, different-class pair) couples ranked right."""
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    same, other = [], []
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            (same if labels[i] == labels[j] else other).append(float(x[i] @ x[j]))
    same, other = np.array(same)[:, None], np.array(other)[None, :]
    return float(((same > other).sum() + 0.5 * (same == other).sum()) / (same.size * other.size))


def test_same_class_auroc_against_pairwise_counting():
    rng = np.random.default_rng(3)
    for n, dim, classes in ((30, 5, 4), (57, 8, 9), (40, 3, 2)):
        labels = rng.integers(classes, size=n)
        x = rng.normal(size=(n, dim)) + 0.8 * np.eye(classes, dim)[labels]  # a little class structure
        assert same_class_auroc(x, labels) == pytest.approx(naive_same_class_auroc(x, labels), abs=1e-12)
    names = ["dog", "car", "dog", "piano", "car"]
    x = rng.normal(size=(5, 4))
    assert same_class_auroc(torch.from_numpy(x), names) == pytest.approx(naive_same_class_auroc(x, names), abs=1e-12)


def test_same_class_auroc_is_one_on_clustered_and_chance_on_random():
    rng = np.random.default_rng(4)
    labels = np.repeat(np.arange(6), 10)
    centres = rng.normal(size=(6, 32))
    assert same_class_auroc(centres[labels] + 0.01 * rng.normal(size=(60, 32)), labels) == 1.0
    random = same_class_auroc(rng.normal(size=(600, 32)), rng.integers(10, size=600))
    assert random == pytest.approx(0.5, abs=0.02)
    assert same_class_auroc(rng.normal(size=(5, 3)), [1] * 5) is None


@pytest.mark.parametrize("mode", ["vggss", "flickr"])
def test_boxes_partly_outside_keep_their_inside_part(mode):
    boxes = [(-40, 20, 100, 120), (150, 200, 400, 260), (-30, -30, -5, 10), (60, 90, 20, 130)]
    got = metrics.gt_map(boxes, 224, mode=mode)
    count = np.zeros((224, 224))
    for x0, y0, x1, y1 in boxes:  # pixel by pixel, only pixels of the image
        for y in range(224):
            for x in range(224):
                count[y, x] += x0 <= x < x1 and y0 <= y < y1
    expected = (count > 0).astype(float) if mode == "vggss" else np.minimum(count / 2, 1)
    np.testing.assert_array_equal(got.numpy(), expected)
    assert got.sum() > 0
    batched = metrics.gt_maps_from_boxes(torch.tensor([boxes]), 224, mode=mode)
    np.testing.assert_array_equal(batched[0].numpy(), expected)
