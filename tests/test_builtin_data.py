"""The built-in dataset: reproducible, with the structure it promises (checked on pixels and spectra)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchaudio.functional as AF

from fnac_lab.data.builtin import BuiltinAVDataset, BuiltinSpec, builtin_splits, split_classes

SPEC = BuiltinSpec()


@pytest.fixture(scope="module")
def small():
    return BuiltinAVDataset("train", 120, seed=3)


def test_reproducible_from_seed(small):
    again = BuiltinAVDataset("train", 120, seed=3)
    assert torch.equal(small.images, again.images) and torch.equal(small.specs, again.specs)
    other = BuiltinAVDataset("train", 120, seed=4)
    assert not torch.equal(small.images, other.images)
    test = BuiltinAVDataset("test", 120, seed=3)
    assert not torch.equal(small.images, test.images)


def test_item_layout(small):
    item = small[5]
    assert item["image"].dtype == torch.uint8 and item["image"].shape == (3, 48, 48)
    assert item["spec"].shape == (1, 64, 50)
    assert item["box"].shape == (4,) and item["label"].dim() == 0
    assert item["id"] == "train-3-00005"
    assert small.gt_maps([5]).shape == (1, 224, 224)


def test_boxes_and_distractors(small):
    for i in range(len(small)):
        box = small.boxes[i].numpy()
        w, h = box[2] - box[0], box[3] - box[1]
        assert 0 <= box[0] < box[2] <= 1 and 0 <= box[1] < box[3] <= 1
        assert SPEC.object_width[0] - 1e-6 <= w <= SPEC.object_width[1] + 1e-6
        assert SPEC.object_height[0] - 1e-6 <= h <= SPEC.object_height[1] + 1e-6
        labels = small.distractor_labels[i]
        labels = labels[labels >= 0].tolist()
        assert 1 <= len(labels) <= 2
        assert small.labels[i].item() not in labels and len(set(labels)) == len(labels)
        for d in small.distractor_boxes[i][: len(labels)].numpy():
            overlap = max(0.0, min(box[2], d[2]) - max(box[0], d[0]))
            assert overlap <= SPEC.max_overlap * min(w, d[2] - d[0]) + 1e-6


def test_sounding_object_has_its_class_colour(small):
    """Inside the sounding box, the class colour is the most common of the palette's colours."""
    hits = 0
    for i in range(len(small)):
        c = small.labels[i].item()
        x0, y0, x1, y1 = (small.boxes[i] * 48).round().long().tolist()
        pix = small.images[i, :, y0:y1, x0:x1].reshape(3, -1).T.float().numpy()
        palette = np.stack([SPEC.class_colour(k) for k in range(SPEC.n_classes)])
        nearest = np.linalg.norm(pix[:, None] - palette[None], axis=2).argmin(1)
        colours = [tuple(SPEC.class_colour(k)) for k in nearest]
        target = tuple(SPEC.class_colour(c))
        hits += max(set(colours), key=colours.count) == target
    assert hits / len(small) > 0.9


def test_clip_carries_the_class_pitch(small):
    """The strongest mel band over the clip lies near the class fundamental (or a harmonic of it)."""
    mel_freqs = AF.melscale_fbanks(257, 0.0, 8000.0, 64, 16000).argmax(0).float() * (8000 / 256)
    ok = 0
    for i in range(len(small)):
        f0, harmonics, _ = SPEC.class_sound(small.labels[i].item())
        band = small.specs[i, 0].mean(1).argmax().item()
        freq = mel_freqs[band].item()
        ok += any(abs(freq - k * f0) < max(0.12 * k * f0, 60) for k in range(1, harmonics + 1))
    assert ok / len(small) > 0.9


def test_heard_unheard_split():
    heard, unheard = split_classes(20, 5)
    assert len(heard) == 15 and len(unheard) == 5 and not set(heard) & set(unheard)
    splits = builtin_splits(n_train=80, n_val=20, n_test=40, n_unheard=5)
    assert set(splits) == {"train", "val", "test", "test_heard", "test_unheard"}
    assert set(splits["train"].labels.tolist()) <= set(heard)
    assert set(splits["test_unheard"].labels.tolist()) <= set(unheard)


def test_bad_parameters():
    with pytest.raises(ValueError, match="n_classes"):
        BuiltinSpec(n_classes=100)
    with pytest.raises(ValueError, match="split"):
        BuiltinAVDataset("dev", 10)
