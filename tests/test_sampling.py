"""False-negative ratio and the class-biased sampler against independent computations."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from fnac_lab.data.sampling import ClassBiasedBatchSampler, ShuffledBatchSampler, false_negative_ratio


def naive_fn_ratio(labels) -> float:
    counts = Counter(labels)
    return sum(counts[x] >= 2 for x in labels) / len(labels)


def test_fn_ratio_matches_counting():
    rng = np.random.default_rng(0)
    for _ in range(50):
        labels = rng.integers(0, rng.integers(1, 40), size=rng.integers(1, 100)).tolist()
        assert false_negative_ratio(labels) == pytest.approx(naive_fn_ratio(labels), abs=0)
    assert false_negative_ratio(torch.tensor([1, 2, 3])) == 0.0
    assert false_negative_ratio(["dog", "cat", "dog", "owl"]) == 0.5
    with pytest.raises(ValueError):
        false_negative_ratio([])


@pytest.mark.parametrize("batch,expected", [(128, 0.34), (256, 0.56)])
def test_uniform_classes_give_the_reference_ratio(batch, expected):
    """Uniform over 309 classes: E[FN] = 1 - (308/309)^(B-1), about 34 % at 128 and 56 % at 256."""
    analytic = 1 - (308 / 309) ** (batch - 1)
    assert analytic == pytest.approx(expected, abs=0.01)
    labels = np.arange(309 * 40) % 309
    sampler = ClassBiasedBatchSampler(labels, batch, 0.0, num_batches=400, seed=1)
    got = np.mean([false_negative_ratio(labels[b]) for b in sampler])
    assert got == pytest.approx(analytic, abs=0.01)


def test_vggss_class_mix_ratio(vggss_annotations):
    """VGG-SS's own class frequencies give about 46 % at B = 128 and 70 % at B = 256."""
    labels = np.array([e["class"] for e in vggss_annotations])
    for batch, expected in ((128, 0.46), (256, 0.70)):
        sampler = ClassBiasedBatchSampler(labels, batch, 0.0, num_batches=200, seed=2)
        got = np.mean([false_negative_ratio(labels[b]) for b in sampler])
        assert got == pytest.approx(expected, abs=0.02)


def simulate_class_biased(labels, batch, p, n, rng):
    """The definition, written out: per batch a class, per slot a coin with probability p."""
    classes = sorted(set(labels.tolist()))
    ratios = []
    for _ in range(n):
        c = classes[rng.integers(len(classes))]
        members = np.flatnonzero(labels == c)
        k = int((rng.random(batch) < p).sum())
        chosen = list(rng.choice(members, size=min(k, len(members)), replace=False))
        chosen += list(rng.choice(members, size=max(k - len(members), 0)))
        rest = [i for i in range(len(labels)) if i not in set(chosen)]
        chosen += list(rng.choice(rest, size=batch - k, replace=False))
        ratios.append(naive_fn_ratio(labels[chosen].tolist()))
    return float(np.mean(ratios))


@pytest.mark.parametrize("p", [0.0, 0.1, 0.3, 0.5])
def test_class_biased_fn_ratio_follows_the_definition(p):
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 150, size=3000)
    sampler = ClassBiasedBatchSampler(labels, 64, p, num_batches=300, seed=4)
    got = np.mean([false_negative_ratio(labels[b]) for b in sampler])
    expected = simulate_class_biased(labels, 64, p, 300, np.random.default_rng(5))
    assert got == pytest.approx(expected, abs=0.02)


def test_class_slots_follow_a_binomial():
    """500 classes of 40: the picked class's count in a batch is Bin(B, p) plus rare uniform hits."""
    labels = np.repeat(np.arange(500), 40)
    batch, p = 32, 0.25
    sampler = ClassBiasedBatchSampler(labels, batch, p, num_batches=3000, seed=6)
    top = []
    for b in sampler:
        assert len(set(b)) == batch  # the class has enough members: no index twice
        top.append(Counter(labels[b].tolist()).most_common(1)[0][1])
    top = np.array(top)
    assert top.mean() == pytest.approx(batch * p, abs=0.25)
    assert top.var() == pytest.approx(batch * p * (1 - p), rel=0.15)


def test_small_class_is_drawn_with_replacement_beyond_its_size():
    labels = np.array([0, 0, 0] + [1] * 50)
    sampler = ClassBiasedBatchSampler(labels, 16, 1.0, num_batches=50, seed=7)
    for b in sampler:
        counts = Counter(b)
        if labels[b[0]] == 0:
            assert set(b) == {0, 1, 2}  # all three members, then repeats
        else:
            assert max(counts.values()) == 1  # class 1 has enough members


def test_sampler_is_reproducible_and_epochs_differ():
    labels = np.arange(500) % 7
    a = ClassBiasedBatchSampler(labels, 20, 0.3, seed=1)
    b = ClassBiasedBatchSampler(labels, 20, 0.3, seed=1)
    assert list(a) == list(b)
    b.set_epoch(1)
    assert list(a) != list(b)
    assert len(a) == 500 // 20


def test_shuffled_batches_cover_each_sample_once():
    s = ShuffledBatchSampler(103, 10, seed=0)
    batches = list(s)
    assert len(batches) == 10
    flat = [i for b in batches for i in b]
    assert len(set(flat)) == 100
    s.set_epoch(1)
    assert list(s) != batches


def test_bad_arguments():
    with pytest.raises(ValueError, match="p must"):
        ClassBiasedBatchSampler([0, 1], 2, 1.5)
    with pytest.raises(ValueError, match="exceeds"):
        ClassBiasedBatchSampler([0, 1], 3, 0.5)
