"""Analysis functions against explicit loops, counting and closed forms computed independently here."""

from __future__ import annotations

import json
import math
import statistics

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fnac_lab import analysis
from fnac_lab.config import ConfigError, preset
from fnac_lab.losses import distribution_distance
from fnac_lab.methods import build_method
from fnac_lab.utils import FnacError


def loss_terms(img, aud, labels=None, **settings):
    """The four terms of the ``fnac`` method built with ``settings`` (its options, and ``tau``)."""
    tau = settings.pop("tau", 0.03)
    return build_method("fnac", settings, tau=tau).terms(img, aud, labels=labels)


def _embeddings(b=6, c=5, h=3, w=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    img = F.normalize(torch.randn(b, c, h, w, generator=gen, dtype=torch.float64), dim=1)
    aud = F.normalize(torch.randn(b, c, generator=gen, dtype=torch.float64), dim=1)
    return img, aud


def _dot(x, y):
    return sum(float(a) * float(b) for a, b in zip(x, y))


@pytest.mark.parametrize("threshold", [0.6, 0.3, None])
def test_adjacency_matrices_equal_explicit_loops(threshold):
    img, aud = _embeddings()
    tau = 0.07
    b, c, h, w = img.shape
    adj = analysis.batch_adjacency(img, aud, tau=tau, tne_threshold=threshold)
    cells = [(y, x) for y in range(h) for x in range(w)]
    v = [[sum(float(img[i, ch, y, x]) for y, x in cells) / (h * w) for ch in range(c)] for i in range(b)]
    fg = []
    for i in range(b):
        own = {(y, x): _dot(img[i, :, y, x], aud[i]) / tau for y, x in cells}
        lo, hi = min(own.values()), max(own.values())
        norm = {k: (val - lo) / (hi - lo + 1e-5) for k, val in own.items()}
        mask = {k: (val if threshold is None else float(val > threshold)) for k, val in norm.items()}
        for (y, x), m in mask.items():
            assert adj.mask[i, y, x].item() == pytest.approx(m, abs=1e-12)
        fg.append([sum(float(img[i, ch, y, x]) * mask[(y, x)] for y, x in cells) / (h * w) for ch in range(c)])
    for i in range(b):
        for k in range(b):
            assert adj.audio[i, k].item() == pytest.approx(_dot(aud[i], aud[k]) / tau, rel=1e-10)
            assert adj.visual[i, k].item() == pytest.approx(_dot(v[i], v[k]) / tau, rel=1e-10, abs=1e-12)
            assert adj.foreground[i, k].item() == pytest.approx(_dot(fg[i], fg[k]) / tau, rel=1e-10, abs=1e-12)
            best = max(_dot(img[i, :, y, x], aud[k]) for y, x in cells) / tau
            assert adj.cross[i, k].item() == pytest.approx(best, rel=1e-10)


@pytest.mark.parametrize("distance", ["l1", "l2", "smooth_l1"])
def test_adjacency_matrices_reproduce_the_loss_terms(distance):
    img, aud = _embeddings(b=8, seed=3)
    adj = analysis.batch_adjacency(img, aud, tau=0.03, tne_threshold=0.6)
    terms = loss_terms(img, aud, tau=0.03, tne_threshold=0.6, distance=distance)
    assert distribution_distance(adj.audio, adj.cross, distance).item() == pytest.approx(terms["fns_audio"].item(), rel=1e-12)
    assert distribution_distance(adj.visual, adj.cross, distance).item() == pytest.approx(terms["fns_visual"].item(), rel=1e-12)
    assert distribution_distance(adj.audio, adj.foreground, distance).item() == pytest.approx(terms["tne"].item(), rel=1e-12)
    soft = adj.softmax()["cross"]
    row = [math.exp(float(x)) for x in adj.cross[2]]
    assert soft[2, 5].item() == pytest.approx(row[5] / sum(row), rel=1e-10)


def test_same_class_mask_counts_pairs():
    labels = [3, 1, 3, 2, 1, 3]
    mask = analysis.same_class_mask(labels)
    with_self = analysis.same_class_mask(labels, include_self=True)
    for i in range(6):
        for j in range(6):
            assert bool(mask[i, j]) == (labels[i] == labels[j] and i != j)
            assert bool(with_self[i, j]) == (labels[i] == labels[j])
    assert int(mask.sum()) == 2 * (3 + 1)  # class 3: 3 unordered pairs, class 1: 1 pair


def test_pair_precision_recall_against_counting():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, size=12)
    sim = rng.normal(size=(12, 12))
    sim = sim + sim.T + 2.0 * (labels[:, None] == labels[None, :])
    scores, same = analysis.pair_scores(sim, labels)
    pairs = [(i, j) for i in range(12) for j in range(i + 1, 12)]
    assert len(scores) == len(pairs)
    for (i, j), s, t in zip(pairs, scores, same):
        assert s == sim[i, j] and t == (labels[i] == labels[j])
    pr = analysis.pair_precision_recall(scores, same)
    n_same = sum(labels[i] == labels[j] for i, j in pairs)
    for p, r, thr in zip(pr.precision, pr.recall, pr.thresholds):
        chosen = [(i, j) for i, j in pairs if sim[i, j] >= thr]
        hits = sum(labels[i] == labels[j] for i, j in chosen)
        assert p == pytest.approx(hits / len(chosen))
        assert r == pytest.approx(hits / n_same)
    # Average precision: mean over the same-class pairs of the precision at their rank (no ties here).
    ranked = sorted(pairs, key=lambda ij: -sim[ij])
    hits, precisions = 0, []
    for rank, (i, j) in enumerate(ranked, start=1):
        if labels[i] == labels[j]:
            hits += 1
            precisions.append(hits / rank)
    assert pr.average_precision == pytest.approx(sum(precisions) / n_same)
    top = ranked[:n_same]
    assert pr.r_precision == pytest.approx(sum(labels[i] == labels[j] for i, j in top) / n_same)
    assert pr.base_rate == pytest.approx(n_same / len(pairs))
    # AUROC: the share of (same, different) pair couples ordered correctly (Mann-Whitney, no ties here).
    same_s = [sim[ij] for ij in pairs if labels[ij[0]] == labels[ij[1]]]
    diff_s = [sim[ij] for ij in pairs if labels[ij[0]] != labels[ij[1]]]
    assert pr.auroc == pytest.approx(np.mean([a > b for a in same_s for b in diff_s]))
    with pytest.raises(ValueError, match="all of one kind"):
        analysis.pair_precision_recall(scores, np.zeros_like(same))


def test_same_class_softmax_mass_against_loops():
    labels = [0, 1, 0, 2, 1, 0]
    sim = torch.tensor(np.random.default_rng(1).normal(size=(6, 6)) * 3)
    masses = []
    for i in range(6):
        partners = [j for j in range(6) if j != i and labels[j] == labels[i]]
        if partners:
            z = sum(math.exp(float(x)) for x in sim[i])
            masses.append(sum(math.exp(float(sim[i, j])) for j in partners) / z)
    assert analysis.same_class_softmax_mass(sim, labels) == pytest.approx(sum(masses) / len(masses))


def test_nearest_neighbour_accuracy_against_loops():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(15, 4))
    labels = rng.integers(0, 3, size=15)
    hits = 0
    for i in range(15):
        cos = [(_dot(x[i], x[j]) / (np.linalg.norm(x[i]) * np.linalg.norm(x[j])), j) for j in range(15) if j != i]
        hits += labels[max(cos)[1]] == labels[i]
    assert analysis.nearest_neighbour_accuracy(x, labels) == pytest.approx(hits / 15)


def test_best_worst_orders_with_ties_by_index():
    cious = [0.2, 0.9, 0.5, 0.9, 0.1, 0.2]
    best, worst = analysis.best_worst(cious, 3)
    assert best.tolist() == [1, 3, 2]
    assert worst.tolist() == [4, 0, 5]


def test_peak_outcome_classifies_the_maximum():
    maps = torch.zeros(3, 224, 224)
    maps[0, 50, 30] = 1.0  # inside the sounding box (x 0.1-0.3, y 0.1-0.5)
    maps[1, 150, 180] = 1.0  # inside the distractor (x 0.7-0.9, y 0.5-0.9)
    maps[2, 210, 120] = 1.0  # neither
    box = [0.1, 0.1, 0.3, 0.5]
    boxes = [box] * 3
    distractors = [[[0.7, 0.5, 0.9, 0.9], [-1, -1, -1, -1]]] * 3
    assert analysis.peak_outcome(maps, boxes, distractors).tolist() == ["sounding object", "distractor", "background"]


def _run(ap50, val, n=500, **extra):
    return {"ap50": ap50, "mean_ciou": ap50 / 2, "auc": ap50 / 3, "n_samples": n, "val_ap50_by_epoch": val,
            "best_epoch": len(val), "epochs_trained": len(val), "val": {}, "fn_ratio": 0.9, "train_seconds": 1.0,
            "reference_maps": {"centre_prior": {"ap50": 0.1, "mean_ciou": 0.3, "auc": 0.3},
                        "random": {"ap50": 0.0, "mean_ciou": 0.2, "auc": 0.2},
                        "oracle": {"ap50": 0.99, "mean_ciou": 0.6, "auc": 0.6}}, **extra}


def test_compare_to_baseline_noise_single_seed():
    fnac, nce = _run(0.70, [0.3, 0.6, 0.62, 0.66, 0.64]), _run(0.60, [0.3, 0.58, 0.6, 0.61, 0.59])
    out = analysis.compare_to_baseline([fnac], [nce])
    test_se = math.sqrt(0.7 * 0.3 / 500 + 0.6 * 0.4 / 500)
    jitter = math.sqrt(statistics.stdev([0.62, 0.66, 0.64]) ** 2 + statistics.stdev([0.6, 0.61, 0.59]) ** 2)
    assert out["ap50"] == pytest.approx(0.10)
    assert out["noise"] == pytest.approx(max(test_se, jitter))
    assert out["exceeds_noise"] is (0.10 > 2 * max(test_se, jitter))
    assert out["exceeds_noise"]


def test_compare_to_baseline_noise_over_seeds():
    fnac = [_run(a, [0.5, a]) for a in (0.62, 0.66, 0.61)]
    nce = [_run(a, [0.5, a]) for a in (0.60, 0.61, 0.63)]
    out = analysis.compare_to_baseline(fnac, nce)
    gains = [0.02, 0.05, -0.02]
    assert out["ap50"] == pytest.approx(statistics.mean(gains))
    assert out["noise"] == pytest.approx(statistics.stdev(gains) / math.sqrt(3))
    assert not out["exceeds_noise"]


def test_report_table_markdown_and_statements(tmp_path):
    from fnac_lab.config import preset

    cfg = preset("smoke", warmup_epochs=1)
    fnac, nce = _run(0.05, [0.4, 0.1, 0.05]), _run(0.60, [0.4, 0.5, 0.6])
    report = analysis.run_report(cfg, [fnac], [nce])
    table = analysis.write_report(tmp_path, report)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["ap50"] == 0.05 and saved["baseline"]["ap50"] == 0.60
    assert saved["gain"]["ap50"] == pytest.approx(-0.55)
    rows = {}
    for line in (tmp_path / "scores.md").read_text().splitlines()[2:7]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = [float(c) for c in cells[1:]]
    assert rows["FNAC"] == [0.05, 0.025, round(0.05 / 3, 3)]
    assert rows["NCE baseline"] == [0.6, 0.3, 0.2]
    assert rows["oracle (gt-derived)"] == [0.99, 0.6, 0.6]
    assert list(table.index)[:2] == ["FNAC", "NCE baseline"]
    text = " ".join(analysis.what_this_run_shows(report))
    assert "does not show a difference" in text
    assert ("Against the centre prior (AP50 0.100, mean cIoU 0.300, AUC 0.300): FNAC beats it on none" in text)
    assert "the NCE baseline beats it on AP50 but not on mean cIoU and AUC" in text  # 0.6, 0.3 (a tie), 0.2
    assert "from 0.400 at the end of the 1-epoch NCE warm-up to at best 0.100 and 0.050 at the last epoch" in text
    assert "a collapse, while the NCE twin reached 0.600 over the same epochs: FNAC's terms destroyed" in text
    assert "come from the NCE warm-up" not in text


def test_a_fall_the_twin_shares_is_not_blamed_on_the_method():
    """The twin's curve over the same epochs decides: both fell after a 1-epoch warm-up whose checkpoint both kept."""
    from fnac_lab.config import preset

    cfg = preset("smoke", warmup_epochs=1)
    fnac, nce = _run(0.05, [0.4, 0.1, 0.05]), _run(0.06, [0.4, 0.1, 0.1])
    fnac["best_epoch"] = nce["best_epoch"] = 1
    text = " ".join(analysis.what_this_run_shows(analysis.run_report(cfg, [fnac], [nce])))
    assert "; the NCE twin fell as well, to at best 0.100: a collapse of the training itself, not of FNAC's terms." \
        in text and "destroyed" not in text
    assert "Both selected checkpoints come from the NCE warm-up (epochs 1 and 1 of 1)" in text
    alone = " ".join(analysis.what_this_run_shows(analysis.run_report(cfg, [fnac], [])))
    assert "no NCE twin was trained to tell whether the terms caused it" in alone


def test_notebook_config_applies_the_method_and_overrides():
    cfg, applied = analysis.notebook_config("demo", smoke=True, overrides={"lr": 0.01, "fnac.tne_threshold": "soft"})
    assert applied == {"lr": 0.01, "fnac.tne_threshold": "soft"}
    assert cfg.lr == 0.01 and cfg.options.tne_threshold is None and cfg.method == "fnac"
    from fnac_lab.config import PRESETS

    assert cfg.epochs == PRESETS["smoke"]["epochs"]
    nce, applied = analysis.notebook_config("demo", smoke=True, method="nce", overrides={"seed": 3})
    assert applied == {"method": "nce", "seed": 3} and (nce.method, nce.seed) == ("nce", 3)
    with pytest.raises(ConfigError, match="unknown setting 'sed'"):
        analysis.notebook_config("demo", smoke=True, overrides={"sed": 3})
    with pytest.raises(ConfigError, match="fnac.w_tne: an option of method 'fnac', and this run's method is 'nce'"):
        analysis.notebook_config("demo", smoke=True, method="nce", overrides={"fnac.w_tne": 0})
    cfg, _ = analysis.notebook_config("demo", smoke=False)
    assert cfg.image_size == PRESETS["demo"]["image_size"]
    twin = analysis.nce_twin(cfg)
    def common(c):
        return {k: v for k, v in c.settings().items() if "." not in k and k != "method"}

    assert twin.method == "nce" and common(twin) == common(cfg)  # the same run, with the nce method


class _LabelModel(torch.nn.Module):
    """Embeds a frame by its first pixel's class code and a clip by its first value: a known, exact model."""

    def __init__(self, tau=0.1):
        super().__init__()
        self.tau = tau
        self.codes = F.normalize(torch.randn(4, 3, generator=torch.Generator().manual_seed(0)), dim=1)

    def forward(self, image, spec):
        # image arrives ImageNet-normalised: recover the class code from channel 0 (sign of a constant offset).
        cls_img = (image[:, 0, 0, 0] * 0.229 + 0.485).mul(255).round().long() % 4
        cls_aud = spec[:, 0, 0, 0].round().long()
        img = self.codes[cls_img][:, :, None, None].expand(-1, -1, 2, 2).clone()
        img[:, :, 1, 1] = -img[:, :, 1, 1]
        return img, self.codes[cls_aud]


class _Split:
    def __init__(self, labels):
        self.labels = torch.tensor(labels)

    def __len__(self):
        return len(self.labels)

    def batch(self, idx):
        lab = self.labels[idx]
        image = lab.view(-1, 1, 1, 1).expand(-1, 3, 4, 4).to(torch.uint8)
        spec = lab.view(-1, 1, 1, 1).float().expand(-1, 1, 2, 2)
        return {"image": image, "spec": spec, "label": lab, "id": [str(i) for i in idx]}


def test_intramodal_retrieval_pools_pairs_within_batches():
    labels = [0, 1, 0, 2, 3, 3, 1, 2, 0, 0, 1]
    model, split = _LabelModel(), _Split(labels)
    table, curves = analysis.intramodal_retrieval(model, split, batch_size=4, tau=0.1, tne_threshold=0.6)
    # Two batches of four (the last three samples are dropped): pairs only inside each batch.
    pairs = [(i, j) for start in (0, 4) for i in range(start, start + 4) for j in range(i + 1, start + 4)]
    same = [labels[i] == labels[j] for i, j in pairs]
    assert curves["audio"].n_pairs == len(pairs) == 12
    assert curves["audio"].n_same == sum(same) == 2
    # The audio embedding is the class code: same-class pairs score 1 / tau, the maximum, so AP is 1.
    assert table.loc["audio", "average_precision"] == pytest.approx(1.0)
    assert table.loc["audio", "base_rate"] == pytest.approx(2 / 12)
    codes = model.codes.double()
    mass = []
    for start in (0, 4):
        lab = labels[start:start + 4]
        a = codes[lab] @ codes[lab].t() / 0.1
        mass.append(analysis.same_class_softmax_mass(a, lab))
    assert table.loc["audio", "same_class_mass"] == pytest.approx(np.mean(mass), rel=1e-6)
    emb = analysis.collect_embeddings(model, split, batch_size=4)
    assert np.allclose(emb["audio"], model.codes[labels].numpy())
    assert np.allclose(emb["visual"], model.codes[labels].numpy() / 2)  # three cells +code, one cell -code
    assert emb["ids"] == [str(i) for i in range(len(labels))]


def test_idealised_embeddings_follow_the_annotations():
    batch = {"label": torch.tensor([1, 2]),
             "box": torch.tensor([[0.0, 0.0, 0.5, 1.0], [0.5, 0.0, 1.0, 1.0]]),
             "distractor_boxes": torch.tensor([[[0.5, 0.0, 1.0, 1.0]], [[-1.0, -1.0, -1.0, -1.0]]]),
             "distractor_labels": torch.tensor([[2], [-1]])}
    img, aud = analysis.idealised_embeddings(batch, n_classes=4, grid=4, dim=8, noise=0.0)
    # Cell centres at 0.125, 0.375 | 0.625, 0.875: columns 0-1 are the left half, 2-3 the right half.
    for r in range(4):
        for c in range(2):
            assert torch.allclose(img[0, :, r, c], aud[0])  # sounding object, class 1
            assert torch.allclose(img[1, :, r, c], img[1, :, 0, 0])  # background of frame 1
        for c in range(2, 4):
            assert torch.allclose(img[0, :, r, c], aud[1])  # frame 0's distractor is class 2, clip 1's class
            assert torch.allclose(img[1, :, r, c], aud[1])
    background = img[1, :, 0, 0]
    assert not torch.allclose(background, aud[0]) and not torch.allclose(background, aud[1])
    noisy, _ = analysis.idealised_embeddings(batch, n_classes=4, grid=4, dim=8, noise=0.1)
    assert torch.allclose(noisy.norm(dim=1), torch.ones(2, 4, 4, dtype=torch.float64))


def test_evaluation_split_equals_the_full_build():
    from fnac_lab.config import preset
    from fnac_lab.datasets import build_datasets

    cfg = preset("smoke", n_train=40, n_val=8, n_test=12, batch_size=8, image_size=16)
    full = build_datasets(cfg)["test"]
    quick = analysis.evaluation_split(cfg, "test")
    assert quick.ids == full.ids
    assert torch.equal(quick.images, full.images) and torch.equal(quick.labels, full.labels)
    assert torch.equal(quick.specs, full.specs)
    assert len(analysis.evaluation_split(cfg, "val")) == 8


def test_adjacency_heatmaps_outline_exactly_the_same_class_pairs():
    import matplotlib

    matplotlib.use("Agg")
    from fnac_lab import viz

    labels = [0, 1, 0, 2, 1]
    mask = analysis.same_class_mask(labels)
    fig = viz.adjacency_heatmaps({"audio": torch.randn(5, 5)}, same_class=mask)
    marked = fig.axes[0].collections[-1].get_offsets()
    expected = sorted((j + 0.5, i + 0.5) for i in range(5) for j in range(5) if labels[i] == labels[j] and i != j)
    assert sorted(map(tuple, np.asarray(marked))) == expected


def test_fnac_strength_sets_the_weights_per_batch_member():
    cfg, overrides = analysis.notebook_config("demo", smoke=False, fnac_strength=0.4, overrides={"batch_size": 128})
    o = cfg.options
    assert (o.w_fns_audio, o.w_fns_visual, o.w_tne) == (0.4 * 128,) * 3 and cfg.batch_size == 128
    assert overrides["fnac.w_tne"] == 0.4 * 128
    zero, _ = analysis.notebook_config("demo", smoke=False, fnac_strength=0)
    assert zero.build_method().trains_nce_only(zero.epochs) and not cfg.build_method().trains_nce_only(cfg.epochs)
    with pytest.raises(FnacError, match="fnac_strength and fnac.w_tne both set"):
        analysis.notebook_config("demo", smoke=False, fnac_strength=0.4, overrides={"w_tne": 1})
    with pytest.raises(FnacError, match="fnac_strength sets the FNAC weights, and this run's method is 'nce'"):
        analysis.notebook_config("demo", smoke=False, fnac_strength=0.4, method="nce")
