"""False-negative ratio and the class-biased sampler against independent computations."""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pytest
import torch

from fnac_lab import paper
from fnac_lab.data.sampling import (ClassBiasedBatchSampler, ShuffledBatchSampler, epoch_batch_sampler,
                                    expected_false_negative_ratio, false_negative_ratio, fn_ratio_table)


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


@pytest.mark.parametrize("batch", [128, 256])
def test_uniform_classes_give_the_reference_ratio(batch):
    """Uniform over 309 classes: E[FN] = 1 - (308/309)^(B-1), about 34 % at 128 and 56 % at 256."""
    analytic = 1 - (308 / 309) ** (batch - 1)
    assert expected_false_negative_ratio(np.arange(309), batch, with_replacement=True) == pytest.approx(analytic)
    assert analytic == pytest.approx(paper.FN_RATIO_OTHER_MIXES["uniform 309 classes"][batch], abs=0.01)
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


@pytest.mark.parametrize("world_size", [1, 2, 4])
def test_sharded_samplers_concatenate_to_the_global_batch(world_size):
    labels = np.arange(300) % 13
    for make in (lambda **kw: ShuffledBatchSampler(300, 32, seed=3, **kw),
                 lambda **kw: ClassBiasedBatchSampler(labels, 32, 0.3, seed=3, **kw)):
        single = make()
        shards = [make(rank=r, world_size=world_size) for r in range(world_size)]
        for s in [single, *shards]:
            s.set_epoch(2)
        got = [sum(parts, []) for parts in zip(*shards)]
        assert got == list(single) == list(shards[0].global_batches())
        assert all(len(s) == len(single) for s in shards)
        assert all(len(part) == 32 // world_size for part in shards[-1])


def test_sharding_needs_a_divisible_batch():
    with pytest.raises(ValueError, match="not divisible by world_size 3"):
        ShuffledBatchSampler(100, 32, rank=0, world_size=3)
    with pytest.raises(ValueError, match="rank must be in"):
        ClassBiasedBatchSampler(np.arange(100) % 5, 32, 0.0, rank=2, world_size=2)


def test_expected_fn_ratio_is_exact_on_enumerated_batches():
    """Every B-subset of a small labelled set, enumerated: the mean FN ratio equals the closed form."""
    labels = np.array([0, 0, 0, 1, 1, 2, 3, 3, 3, 3, 4])
    for batch in (2, 3, 5, 8, 11):
        ratios = [sum(Counter(labels[list(c)].tolist())[x] >= 2 for x in labels[list(c)]) / batch
                  for c in itertools.combinations(range(len(labels)), batch)]
        assert expected_false_negative_ratio(labels, batch) == pytest.approx(np.mean(ratios), abs=1e-12)


def test_expected_fn_ratio_matches_the_samplers():
    labels = np.random.default_rng(0).integers(0, 40, size=2000)
    sampler = ShuffledBatchSampler(len(labels), 64, seed=1)
    got = []
    for epoch in range(30):
        sampler.set_epoch(epoch)
        got += [false_negative_ratio(labels[b]) for b in sampler]
    assert np.mean(got) == pytest.approx(expected_false_negative_ratio(labels, 64), abs=0.005)


def test_expected_fn_ratio_with_replacement_against_simulation():
    # i.i.d. draws from class frequencies 5 : 2 : 2 : 1, counted by hand
    labels = np.repeat(np.arange(4), [5, 2, 2, 1])
    probs = np.array([0.5, 0.2, 0.2, 0.1])
    rng = np.random.default_rng(0)
    shares = []
    for _ in range(4000):
        batch = rng.choice(4, size=5, p=probs).tolist()
        counts = Counter(batch)
        shares.append(sum(counts[c] >= 2 for c in batch) / 5)
    assert expected_false_negative_ratio(labels, 5, with_replacement=True) == pytest.approx(np.mean(shares), abs=0.01)


def test_fn_ratio_table_uses_the_uniform_closed_form():
    table = fn_ratio_table([2, 8], [4])
    assert table.loc[table.batch_size == 8, "fn_ratio"].item() == pytest.approx(1 - 0.75**7)
    assert table.loc[table.batch_size == 2, "fn_ratio"].item() == pytest.approx(0.25)


def test_vggss_class_mix_fn_ratio_with_replacement(vggss_annotations):
    # VGG-SS's own class mix gives about 46 % / 70 % (paper.FN_RATIO_OTHER_MIXES)
    labels = np.array([item["class"] for item in vggss_annotations])
    for batch in (128, 256):
        expected = paper.FN_RATIO_OTHER_MIXES["VGG-SS class mix"][batch]
        assert expected_false_negative_ratio(labels, batch, with_replacement=True) == pytest.approx(expected, abs=0.01)


def test_epoch_sampler_factory_picks_the_sampler_and_the_epoch():
    labels = np.arange(200) % 10
    plain = epoch_batch_sampler(labels, 20, seed=3, epoch=2)
    expected = ShuffledBatchSampler(200, 20, seed=3)
    expected.set_epoch(2)
    assert isinstance(plain, ShuffledBatchSampler) and list(plain) == list(expected)
    biased = epoch_batch_sampler(labels, 20, class_bias_p=0.4, seed=3, epoch=1, rank=1, world_size=2)
    expected = ClassBiasedBatchSampler(labels, 20, 0.4, seed=3, rank=1, world_size=2)
    expected.set_epoch(1)
    assert isinstance(biased, ClassBiasedBatchSampler) and list(biased) == list(expected)
