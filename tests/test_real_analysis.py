"""Real datasets seen by the analysis notebooks: class names as integer codes, the built-in data's batch contract
(``LabelledSplit``), peaks against the ground truth, the real frames drawn with their ground truth, untrained models
named so; each checked against plain loops, numpy or the datasets' own items."""

from __future__ import annotations

import json

import matplotlib
import numpy as np
import pytest
import soundfile
import torch
from PIL import Image

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from fnac_lab import analysis, viz  # noqa: E402
from fnac_lab.cli import main  # noqa: E402
from fnac_lab.config import preset  # noqa: E402
from fnac_lab.data.cache import CachedAVDataset  # noqa: E402
from fnac_lab.data.real import LabelledSplit, class_codes, open_testset, open_trainset  # noqa: E402
from fnac_lab.scoring import EvalResult  # noqa: E402
from fnac_lab.utils import FnacError  # noqa: E402
from references import naive_gt  # noqa: E402

CLASSES = ["wild_bird", "canine", "percussion", "canine", "big_cat", "wild_bird", "canine", "insect"]
RATE = 16000


def naive_codes(names):
    """Codes by hand: the distinct names collected in a loop and sorted, each name's position among them."""
    distinct = []
    for n in names:
        if n not in distinct:
            distinct.append(n)
    distinct.sort()
    return [distinct.index(n) for n in names], distinct


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    """Eight clips with a class each: 224 x 224 png frames of noise, 3.5 s clips at 16 kHz, one VGG-SS box each
    (listed in vggss.json and in a split file), and a training list with the same classes."""
    root = tmp_path_factory.mktemp("real")
    rng = np.random.default_rng(0)
    (root / "frames").mkdir()
    (root / "audio").mkdir()
    entries, boxes = [], {}
    for k, cls in enumerate(CLASSES):
        ident = f"clip_{k:02d}"
        Image.fromarray(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)).save(root / "frames" / f"{ident}.png")
        t = np.arange(int(RATE * 3.5)) / RATE
        soundfile.write(str(root / "audio" / f"{ident}.wav"), 0.4 * np.sin(2 * np.pi * (300 + 50 * k) * t), RATE)
        x0, y0 = rng.uniform(0.05, 0.4, 2)
        box = [float(x0), float(y0), float(x0 + rng.uniform(0.2, 0.5)), float(y0 + rng.uniform(0.2, 0.5))]
        entries.append({"file": ident, "class": cls, "bbox": [box]})
        boxes[ident] = [int(np.clip(v, 0, 1) * 224) for v in box]
    (root / "vggss.json").write_text(json.dumps(entries))
    (root / "split.csv").write_text("".join(f"clip_{k:02d},{c}\n" for k, c in enumerate(CLASSES)))
    return {"root": root, "boxes": boxes, "ids": [e["file"] for e in entries]}


def test_class_codes_match_a_plain_loop():
    rng = np.random.default_rng(1)
    names = [f"class_{v}" for v in rng.integers(0, 30, 200)]
    codes, classes = class_codes(names)
    expected, distinct = naive_codes(names)
    assert codes.dtype == torch.long and codes.tolist() == expected and classes == distinct
    assert [classes[c] for c in codes.tolist()] == names
    assert class_codes([])[0].tolist() == [] and class_codes([])[1] == []


def test_a_test_set_batches_like_the_builtin_data(layout):
    dataset = open_testset("vggss", layout["root"], layout["root"] / "vggss.json", split_csv=layout["root"] / "split.csv")
    view = LabelledSplit(dataset, name="vggss test")
    expected, distinct = naive_codes(CLASSES)
    assert len(view) == 8 and view.ids == layout["ids"] and view.class_names == distinct
    assert view.labels.tolist() == expected
    order = [5, 0, 3]
    batch = view.batch(order)
    assert set(batch) == {"image", "spec", "label", "id", "gt"}
    assert batch["image"].dtype == torch.uint8 and batch["image"].shape == (3, 3, 224, 224)
    assert batch["label"].dtype == torch.long and batch["label"].tolist() == [expected[i] for i in order]
    assert [view.class_name(int(c)) for c in batch["label"]] == [CLASSES[i] for i in order]
    assert batch["id"] == [layout["ids"][i] for i in order]
    for j, i in enumerate(order):
        item = dataset[i]
        assert torch.equal(batch["image"][j], item["image"]) and torch.equal(batch["spec"][j], item["spec"])
        gt = naive_gt([layout["boxes"][layout["ids"][i]]], "vggss")
        np.testing.assert_array_equal(batch["gt"][j].numpy(), gt)
        np.testing.assert_array_equal(view.gt_maps([i])[0].numpy(), gt)
    one = view[2]
    assert one["id"] == layout["ids"][2] and int(one["label"]) == expected[2] and one["image"].shape == (3, 224, 224)


def test_a_training_set_is_read_without_augmentation(layout):
    train = open_trainset(layout["root"], "vggsound_full", ids=layout["root"] / "split.csv",
                          labels=layout["root"] / "split.csv")
    test = open_testset("vggss", layout["root"], layout["root"] / "vggss.json", split_csv=layout["root"] / "split.csv")
    view = LabelledSplit(train, name="train")
    first, second = view.batch(range(8)), view.batch(range(8))
    assert torch.equal(first["image"], second["image"]) and torch.equal(first["spec"], second["spec"])
    assert torch.equal(first["image"], torch.stack([test[i]["image"] for i in range(8)]))  # the test resize
    assert "gt" not in first and train.split == "train"  # the training set itself is left as it was
    assert view.labels.tolist() == naive_codes(CLASSES)[0]
    with pytest.raises(FnacError, match="no ground truth to localise against"):
        view.gt_maps([0])


def test_clips_without_classes_are_refused_in_one_line(layout):
    plain = open_trainset(layout["root"], "vggsound_full", ids=None)
    with pytest.raises(FnacError, match="have no class labels") as err:
        LabelledSplit(plain, name="unlabelled")
    assert "\n" not in str(err.value) and str(err.value).startswith("unlabelled:")


def test_a_cache_is_read_as_its_test_frames_with_its_labels(layout, tmp_path):
    out = tmp_path / "cache"
    assert main(["cache", "--quiet", "--workers", "1", "--data-root", str(layout["root"]), "--ids",
                 str(layout["root"] / "split.csv"), "--out", str(out)]) == 0
    train = CachedAVDataset(out, split="train")
    train.set_labels(dict(zip(layout["ids"], CLASSES)))
    view = LabelledSplit(train)
    reference = CachedAVDataset(out, split="test", audio_augment=False)
    batch = view.batch([7, 1])
    for j, i in enumerate([7, 1]):
        assert torch.equal(batch["image"][j], reference[i]["image"]) and torch.equal(batch["spec"][j], reference[i]["spec"])
    assert batch["label"].tolist() == [naive_codes(CLASSES)[0][i] for i in (7, 1)]
    assert torch.equal(train.labels, torch.tensor(naive_codes(CLASSES)[0]))  # the sampler's codes: the same mapping


def naive_peak_on(maps, gt):
    out = []
    for m, g in zip(maps, gt):
        best, at = -np.inf, None
        for r in range(m.shape[0]):
            for c in range(m.shape[1]):
                if m[r, c] > best:
                    best, at = m[r, c], (r, c)
        out.append(bool(g[at] > 0))
    return out


def test_peak_on_ground_truth_matches_a_pixel_loop():
    rng = np.random.default_rng(2)
    maps = rng.standard_normal((6, 12, 12)).astype(np.float32)
    maps[5] = 0.0  # all ties: the first pixel
    gt = (rng.uniform(size=(6, 12, 12)) > 0.6).astype(np.float32)
    gt[5, 0, 0] = 1.0
    assert analysis.peak_on_ground_truth(maps, gt).tolist() == naive_peak_on(maps, gt)


def test_real_peaks_samples_and_description(layout):
    dataset = open_testset("vggss", layout["root"], layout["root"] / "vggss.json", split_csv=layout["root"] / "split.csv")
    view = LabelledSplit(dataset, name="vggss test")
    rng = np.random.default_rng(3)
    maps = rng.standard_normal((8, 224, 224)).astype(np.float32)
    gts = [naive_gt([layout["boxes"][i]], "vggss") for i in layout["ids"]]
    for k in (0, 3):  # two maps peak inside their box
        x0, y0, x1, y1 = layout["boxes"][layout["ids"][k]]
        maps[k, (y0 + y1) // 2, (x0 + x1) // 2] = 100.0
    expected = ["sounding object" if on else "background" for on in naive_peak_on(maps, gts)]
    assert expected[0] == expected[3] == "sounding object"
    assert analysis.peak_outcomes(view, maps, chunk=3).tolist() == expected
    assert not analysis.has_distractors(view) and analysis.peak_kinds(view) == ("sounding object", "background")
    table = analysis.sample_table(view)
    assert table["id"].tolist() == layout["ids"] and table["class"].tolist() == CLASSES
    assert table["label"].tolist() == naive_codes(CLASSES)[0]
    cfg = preset("smoke", tau=0.2)
    assert analysis.class_count(cfg, view) == 5
    line = analysis.describe_data(cfg.replace(dataset="real", test_root=str(layout["root"]), testset="vggss",
                                              test_annotations="x", train_root="y"), "test", view)
    assert line == (f"data: real test split (vggss test of {layout['root']}), 8 samples, 5 classes: big_cat, canine, "
                    "insect, percussion, wild_bird; tau 0.2, TNE threshold 0.6")


def test_builtin_description_peaks_and_samples_are_as_before():
    cfg = preset("smoke", n_test=16)
    data = analysis.evaluation_split(cfg, "test")
    assert analysis.describe_data(cfg, "test", data) == (
        f"data: {cfg.dataset} test split, {len(data)} samples, {cfg.n_classes} classes; tau {cfg.tau}, "
        f"TNE threshold {cfg.options.tne_threshold if cfg.options.tne_threshold is not None else 'soft'}")
    assert analysis.class_count(cfg, data) == cfg.n_classes and analysis.has_distractors(data)
    maps = torch.from_numpy(np.random.default_rng(4).standard_normal((16, 224, 224)).astype(np.float32))
    everything = data.batch(list(range(16)))
    assert analysis.peak_outcomes(data, maps).tolist() == analysis.peak_outcome(
        maps, everything["box"], everything["distractor_boxes"]).tolist()
    table = analysis.sample_table(data)
    assert table["id"].tolist() == everything["id"] and table["label"].tolist() == everything["label"].tolist()
    assert table["class"].tolist() == [data.class_name(int(c)) for c in everything["label"]]
    assert analysis.no_negatives_reason(cfg, 0.0) == ("no negatives shown: they exist for the built-in test split, "
                                                      "and test_negatives=0.0 gives none")


def test_a_real_sample_grid_shows_the_frame_and_its_ground_truth(layout):
    dataset = open_testset("vggss", layout["root"], layout["root"] / "vggss.json", split_csv=layout["root"] / "split.csv")
    view = LabelledSplit(dataset, name="vggss test")
    rng = np.random.default_rng(5)
    maps = rng.uniform(size=(8, 224, 224)).astype(np.float32)
    results = {"FNAC": EvalResult(ids=view.ids, cious=torch.linspace(0, 0.7, 8, dtype=torch.float64),
                                  labels=view.labels.tolist(), scores={}, maps=maps)}
    fig = viz.sample_grid(view, results, indices=np.array([6, 2]), title="two")
    axes = np.array(fig.axes[:4]).reshape(2, 2)
    for row, i in zip(axes, (6, 2)):
        assert row[0].get_title() == CLASSES[i]
        frame = np.asarray(Image.open(layout["root"] / "frames" / f"{layout['ids'][i]}.png").convert("RGB"))
        assert np.array_equal(row[0].images[0].get_array(), frame)  # 224 x 224 already: the photograph itself
        outline = [c for c in row[0].collections if "lime" in str(c.get_edgecolor()) or
                   np.allclose(c.get_edgecolor()[:, :3], matplotlib.colors.to_rgb("lime"))]
        assert outline, "the ground truth's outline is drawn in green"
        x0, y0, x1, y1 = layout["boxes"][layout["ids"][i]]
        vertices = np.concatenate([p.vertices for p in outline[0].get_paths()])
        assert vertices[:, 0].min() == pytest.approx(x0, abs=1) and vertices[:, 0].max() == pytest.approx(x1, abs=1)
        assert vertices[:, 1].min() == pytest.approx(y0, abs=1) and vertices[:, 1].max() == pytest.approx(y1, abs=1)
    plt.close(fig)


def test_untrained_models_are_named_so():
    pair = analysis.load_or_train_model_pair(smoke=True)
    assert list(pair.models) == ["FNAC (untrained)", "NCE baseline (untrained)"]
    assert "untrained" in pair.source
    for name in pair.models:
        colours = viz.model_colours()
        assert colours[name] == colours[name.replace(analysis.UNTRAINED, "")]


def test_long_model_names_put_their_scores_on_a_second_line():
    rng = np.random.default_rng(6)
    images = torch.from_numpy(rng.integers(0, 256, (2, 3, 224, 224), dtype=np.uint8))
    maps = {"FNAC": rng.uniform(size=(2, 224, 224)), "NCE baseline (untrained)": rng.uniform(size=(2, 224, 224))}
    cious = {"FNAC": [0.5, 0.25], "NCE baseline (untrained)": [0.125, 0.75]}
    fig = viz.localisation_grid(images, maps, boxes=[[0.1, 0.1, 0.5, 0.5]] * 2, cious=cious)
    titles = [[ax.get_title() for ax in fig.axes[3 * r + 1:3 * r + 3]] for r in range(2)]
    assert titles == [["FNAC cIoU 0.50", "NCE baseline (untrained)\ncIoU 0.12"],
                      ["FNAC cIoU 0.25", "NCE baseline (untrained)\ncIoU 0.75"]]
    plt.close(fig)
    short = viz.localisation_grid(images, {"FNAC": maps["FNAC"], "NCE baseline": maps["FNAC"]}, cious={
        "FNAC": [0.5, 0.25], "NCE baseline": [0.125, 0.75]}, boxes=[[0.1, 0.1, 0.5, 0.5]] * 2)
    assert short.axes[2].get_title() == "NCE baseline cIoU 0.12"
    assert short.get_size_inches()[1] < fig.get_size_inches()[1]  # the second line gets its room
    plt.close(short)


def test_a_heatmap_title_wider_than_its_figure_breaks_before_the_note():
    rng = np.random.default_rng(7)
    wide = {name: torch.from_numpy(rng.standard_normal((32, 32))) for name in analysis.MATRICES}  # 03's batches
    narrow = {name: m[:8, :8] for name, m in wide.items()}
    head = "NCE baseline (untrained), batch 0, tau 0.100, TNE mask > 0.60, FN ratio 0.81"
    note = "each row's softmax, each panel on its own scale"
    short = viz.adjacency_heatmaps(wide, softmax=True, suptitle="FNAC, batch 0")
    assert short._suptitle.get_text() == f"FNAC, batch 0: {note}"
    two = viz.adjacency_heatmaps(wide, softmax=True, suptitle=head)
    assert two._suptitle.get_text() == f"{head}:\n{note}"
    more = viz.adjacency_heatmaps(narrow, softmax=True, suptitle=head)
    lines = more._suptitle.get_text().split("\n")
    assert len(lines) >= 3 and lines[-1] == note and " ".join(lines[:-1]) == f"{head}:"
    for fig in (short, two, more):  # the title stays inside the figure's own width
        assert fig._suptitle.get_window_extent(fig.canvas.get_renderer()).width <= fig.bbox.width
        plt.close(fig)
