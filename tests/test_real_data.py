"""Real benchmark readers and evaluation through the command line, on small layouts built from the real
VGG-SS / Flickr-SoundNet ids and boxes, checked against plain numpy / scipy / PIL computations."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile
import torch
from PIL import Image

from fnac_lab.cli import main
from fnac_lab.config import ConfigError, preset
from fnac_lab.checkpoint import build_model, load_checkpoint
from fnac_lab.data import annotations, decode, files, real
from fnac_lab.datasets import build_datasets
from fnac_lab.train import train
from fnac_lab.utils import FnacError, normalise_images
from references import file_log_spectrogram, naive_ciou, naive_gt, naive_summary

# (width, height, extension, PIL mode) of the frames and (rate, channels, subtype, seconds) of the clips
FRAMES = [(320, 240, "jpg", "RGB"), (200, 300, "png", "RGB"), (224, 224, "jpg", "L"), (500, 281, "png", "RGBA"),
          (97, 61, "jpg", "RGB"), (640, 360, "jpg", "RGB"), (256, 256, "png", "L"), (300, 200, "jpg", "RGB")]
CLIPS = [(16000, 1, "PCM_16", 10.0), (44100, 2, "FLOAT", 2.0), (22050, 1, "PCM_24", 5.0), (16000, 2, "PCM_16", 1.3),
         (48000, 1, "FLOAT", 3.0), (8000, 3, "PCM_16", 4.0), (16000, 1, "DOUBLE", 7.0), (32000, 2, "PCM_U8", 3.5)]


# -- layouts --------------------------------------------------------------------------------------------------

def write_frame(path, k: int, rng) -> None:
    w, h, _, mode = FRAMES[k % len(FRAMES)]
    pixels = rng.integers(0, 256, size=(h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
    image = Image.fromarray(pixels).resize((w, h), Image.BILINEAR).convert(mode)
    image.save(path)


def write_clip(path, k: int, rng) -> None:
    rate, channels, subtype, seconds = CLIPS[k % len(CLIPS)]
    t = np.arange(int(rate * seconds)) / rate
    tone = 0.5 * np.sin(2 * np.pi * (200 + 150 * k) * t)
    x = tone[:, None] * rng.uniform(0.3, 1.0, size=channels) + 0.05 * rng.standard_normal((t.size, channels))
    soundfile.write(str(path), x, rate, subtype=subtype)


def add_sample(root, ident: str, k: int, rng, *, frame: bool = True, audio: bool = True, flat: bool = False) -> None:
    frames, audio_dir = (root, root) if flat else (root / "frames", root / "audio")
    frames.mkdir(parents=True, exist_ok=True)
    audio_dir.mkdir(parents=True, exist_ok=True)
    if frame:
        write_frame(frames / f"{ident}.{FRAMES[k % len(FRAMES)][2]}", k, rng)
    if audio:
        write_clip(audio_dir / f"{ident}.wav", k, rng)


def read_csv(path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A small untrained model saved in the checkpoint format of the training loop."""
    cfg = preset("smoke", visual_stage=0, audio_stage=0, embed_dim=16, visual_dropout=0.0, seed=3)
    torch.manual_seed(0)
    model = build_model(cfg)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    torch.save({"config": cfg.to_dict(), "epoch": 0, "model": model.state_dict(), "history": [], "best": {}}, path)
    return path


@pytest.fixture(scope="module")
def vggss_layout(tmp_path_factory, reference_data, vggss_annotations):
    """Eight VGG-SS test clips (heard and unheard, one to three boxes) in ROOT/frames + ROOT/audio, a split file
    that also lists two ids absent on disk (one without frame, one without audio)."""
    heard = {r[0] for r in csv.reader(open(reference_data / "vggss_heard_test.csv"))}
    unheard = {r[0] for r in csv.reader(open(reference_data / "vggss_unheard_test.csv"))}
    by_id = {e["file"]: e for e in vggss_annotations}
    order = [r[0] for r in csv.reader(open(reference_data / "vggss_test.csv"))]
    chosen = []
    for pool in (heard, unheard):
        singles = [i for i in order if i in pool and len(by_id[i]["bbox"]) == 1][:3]
        multi = [i for i in order if i in pool and len(by_id[i]["bbox"]) >= 2][:1]
        chosen += singles + multi
    absent = [i for i in order if i not in chosen][:2]
    root = tmp_path_factory.mktemp("vggss")
    rng = np.random.default_rng(0)
    for k, ident in enumerate(chosen):
        add_sample(root, ident, k, rng)
    add_sample(root, absent[0], 0, rng, frame=False)
    add_sample(root, absent[1], 1, rng, audio=False)
    split = root / "split.csv"
    listed = chosen[:3] + absent + chosen[3:]
    split.write_text("".join(i + "\n" for i in listed))
    return {"root": root, "split": split, "chosen": chosen, "absent": absent, "listed": listed, "by_id": by_id,
            "json": reference_data / "vggss.json", "heard": heard, "unheard": unheard}


def evaluate(*args) -> int:
    return main(["evaluate", "--quiet", "--workers", "0", "--batch-size", "3", *map(str, args)])


def test_item_preprocessing_matches_pil_and_scipy(vggss_layout):
    ds = real.open_testset("vggss", vggss_layout["root"], vggss_layout["json"], split_csv=vggss_layout["split"])
    assert ds.ids == vggss_layout["chosen"]
    for k in range(len(ds)):
        item = ds[k]
        sample = ds.samples[k]
        np.testing.assert_allclose(item["spec"][0].numpy(), file_log_spectrogram(sample.audio) / 12, atol=1e-4, rtol=0)
        ref = np.asarray(Image.open(sample.frame).convert("RGB").resize((224, 224), Image.BICUBIC), dtype=float)
        got = item["image"].permute(1, 2, 0).numpy().astype(float)
        assert item["image"].dtype == torch.uint8 and got.shape == (224, 224, 3)
        assert np.abs(got - ref).mean() < 1.0 and np.abs(got - ref).max() <= 12  # two bicubic implementations
        boxes = [[int(min(max(v, 0), 1) * 224) for v in b] for b in vggss_layout["by_id"][sample.id]["bbox"]]
        np.testing.assert_array_equal(item["gt"].numpy(), naive_gt(boxes, "vggss"))
        assert item["label"] == vggss_layout["by_id"][sample.id]["class"]


def test_vggss_evaluation_through_cli(vggss_layout, checkpoint, tmp_path, capsys):
    out = tmp_path / "eval"
    assert evaluate("--checkpoint", checkpoint, "--testset", "vggss", "--data-root", vggss_layout["root"],
                    "--annotations", vggss_layout["json"], "--split-csv", vggss_layout["split"], "--out", out,
                    "--save-maps") == 0
    assert "2 listed ids are missing" in capsys.readouterr().out
    scores = json.loads((out / "scores.json").read_text())
    rows = read_csv(out / "per_sample.csv")
    maps = np.load(out / "maps.npz")
    chosen, by_id = vggss_layout["chosen"], vggss_layout["by_id"]
    assert [r["id"] for r in rows] == chosen and sorted(maps.files) == sorted(chosen)
    values = []
    for r in rows:
        boxes = [[int(min(max(v, 0), 1) * 224) for v in b] for b in by_id[r["id"]]["bbox"]]
        expected = naive_ciou(maps[r["id"]], naive_gt(boxes, "vggss"))
        assert float(r["ciou"]) == pytest.approx(expected, abs=1e-6)
        assert r["class"] == by_id[r["id"]]["class"]
        values.append(expected)
    for k, v in naive_summary(values).items():
        assert scores[k] == pytest.approx(v, abs=1e-6)
    assert (scores["n_samples"], scores["n_missing"], scores["n_skipped"]) == (8, 2, 0)
    assert set(scores["reference_maps"]) == {"centre_prior", "random", "oracle"}
    assert scores["reference_maps"]["oracle"]["mean_ciou"] >= scores["reference_maps"]["random"]["mean_ciou"]
    missing = read_csv(out / "missing.csv")
    assert [m["id"] for m in missing] == vggss_layout["absent"]
    assert "no frame" in missing[0]["reason"] and "no audio" in missing[1]["reason"]
    # each saved map is the model's map of that id (clips of several rates are batched by spectrogram width)
    model, _, _ = load_checkpoint(checkpoint)
    ds = real.open_testset("vggss", vggss_layout["root"], vggss_layout["json"], split_csv=vggss_layout["split"])
    for k in (0, 4, 7):
        item = ds[k]
        direct = model.localise(normalise_images(item["image"][None]), item["spec"][None])[0].numpy()
        np.testing.assert_allclose(maps[item["id"]], direct, atol=1e-4)


def test_heard_and_unheard_splits(vggss_layout, reference_data, checkpoint, tmp_path):
    for name in ("vggss_heard", "vggss_unheard"):
        out = tmp_path / name
        assert evaluate("--checkpoint", checkpoint, "--testset", name, "--data-root", vggss_layout["root"],
                        "--annotations", vggss_layout["json"], "--split-csv", reference_data / f"{name}_test.csv",
                        "--out", out) == 0
        listed = [r[0] for r in csv.reader(open(reference_data / f"{name}_test.csv"))]
        pool = vggss_layout["heard"] if name == "vggss_heard" else vggss_layout["unheard"]
        present = [i for i in listed if i in set(vggss_layout["chosen"])]
        assert present == [i for i in vggss_layout["chosen"] if i in pool]
        scores = json.loads((out / "scores.json").read_text())
        assert scores["n_samples"] == len(present) == 4
        # every listed id is scored, missing on disk, or skipped for a ground truth empty inside the image
        skipped = read_csv(out / "skipped.csv")
        assert scores["n_missing"] + scores["n_skipped"] == len(listed) - 4
        assert scores["n_missing"] == len(read_csv(out / "missing.csv")) and scores["n_skipped"] == len(skipped)
        by_id = vggss_layout["by_id"]
        empty = [i for i in listed if all(int(min(max(b[2], 0), 1) * 224) <= int(min(max(b[0], 0), 1) * 224)
                                          or int(min(max(b[3], 0), 1) * 224) <= int(min(max(b[1], 0), 1) * 224)
                                          for b in by_id[i]["bbox"])]
        assert [r["id"] for r in skipped] == empty and all("ground truth empty" in r["reason"] for r in skipped)
        assert [r["id"] for r in read_csv(out / "per_sample.csv")] == present


def test_heard_split_needs_its_list(vggss_layout, checkpoint, tmp_path, capsys):
    assert evaluate("--checkpoint", checkpoint, "--testset", "vggss_heard", "--data-root", vggss_layout["root"],
                    "--annotations", vggss_layout["json"], "--out", tmp_path) == 2
    assert "--split-csv" in capsys.readouterr().err


FLICKR_XML = """<?xml version="1.0"?>
<annotation>
  <filename>{id}.jpg</filename>
  <size><width>256</width><height>256</height></size>
{objects}
</annotation>
"""


def flickr_xml(ident: str, annotators: list[list[tuple[int, int, int, int]]]) -> str:
    objects = []
    for a, boxes in enumerate(annotators):
        for k, (x0, y0, x1, y1) in enumerate(boxes):
            bbox = (f"<bbox><name>source</name><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax>"
                    f"<ymax>{y1}</ymax></bbox>")
            if (a + k) % 2:  # bbox elements may sit at any depth
                bbox = f"<part>{bbox}</part>"
            objects.append(f"  <object><annotator>{a}</annotator>{bbox}</object>")
    return FLICKR_XML.format(id=ident, objects="\n".join(objects))


@pytest.fixture(scope="module")
def flickr_layout(tmp_path_factory, reference_data):
    """Five Flickr-SoundNet test ids, frames and audio flat in ROOT, three annotators in XML (256-px boxes)."""
    rows = [r for r in csv.reader(open(reference_data / "flickr_test.csv", newline="")) if r]
    ids = [r[0] for r in rows[:5]]
    root = tmp_path_factory.mktemp("flickr")
    ann = root / "annotations"
    ann.mkdir()
    rng = np.random.default_rng(1)
    boxes = {}
    for k, ident in enumerate(ids):
        add_sample(root, ident, k + 2, rng, flat=True)
        x0, y0 = rng.integers(20, 120, size=2)
        w, h = rng.integers(60, 110, size=2)
        annotators = []
        for _ in range(3):  # three annotators around one source
            dx0, dy0, dx1, dy1 = (int(v) for v in rng.integers(-15, 16, size=4))
            annotators.append([(int(x0) + dx0, int(y0) + dy0, int(x0 + w) + dx1, int(y0 + h) + dy1)])
        if k == 1:
            annotators[2].append((0, 0, 60, 60))  # an annotator with two boxes
        boxes[ident] = [b for a in annotators for b in a]
        (ann / f"{ident}.xml").write_text(flickr_xml(ident, annotators))
    split = root / "flickr_test.csv"
    split.write_text("".join(f"{r[0]},{r[1]}\r\n" for r in rows[:5]))
    return {"root": root, "ann": ann, "split": split, "ids": ids, "boxes": boxes,
            "classes": {r[0]: r[1] for r in rows[:5]}}


def test_flickr_evaluation_through_cli(flickr_layout, checkpoint, tmp_path):
    out = tmp_path / "flickr"
    assert evaluate("--checkpoint", checkpoint, "--testset", "flickr", "--data-root", flickr_layout["root"],
                    "--annotations", flickr_layout["ann"], "--split-csv", flickr_layout["split"], "--out", out,
                    "--save-maps") == 0
    rows = read_csv(out / "per_sample.csv")
    maps = np.load(out / "maps.npz")
    assert [r["id"] for r in rows] == flickr_layout["ids"]
    values = []
    for r in rows:
        pixels = [[int(224 * v / 256) for v in b] for b in flickr_layout["boxes"][r["id"]]]
        gt = naive_gt(pixels, "flickr")
        assert set(np.unique(gt)) <= {0.0, 0.5, 1.0} and (gt == 1.0).any()
        expected = naive_ciou(maps[r["id"]], gt)
        assert float(r["ciou"]) == pytest.approx(expected, abs=1e-6)
        assert r["class"] == flickr_layout["classes"][r["id"]]
        values.append(expected)
    scores = json.loads((out / "scores.json").read_text())
    for k, v in naive_summary(values).items():
        assert scores[k] == pytest.approx(v, abs=1e-6)
    assert scores["n_missing"] == 0 and read_csv(out / "missing.csv") == []


def test_undecodable_files_stop_the_run_or_are_skipped(flickr_layout, checkpoint, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(flickr_layout["root"], root)
    bad_wav = root / f"{flickr_layout['ids'][1]}.wav"
    bad_wav.write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really audio" * 3)
    bad_jpg = next(root.glob(f"{flickr_layout['ids'][3]}.*g"))
    bad_jpg.write_bytes(bad_jpg.read_bytes()[:40])
    args = ["evaluate", "--quiet", "--workers", "1", "--checkpoint", str(checkpoint), "--testset", "flickr",
            "--data-root", str(root), "--annotations", str(flickr_layout["ann"]), "--out", str(tmp_path / "a")]
    proc = subprocess.run([sys.executable, "-m", "fnac_lab", *args], capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and str(bad_wav) in proc.stderr
    out = tmp_path / "b"
    assert evaluate(*args[4:-1], out, "--skip-bad") == 0
    skipped = {r["id"]: r["reason"] for r in read_csv(out / "skipped.csv")}
    assert set(skipped) == {flickr_layout["ids"][1], flickr_layout["ids"][3]}
    assert str(bad_wav) in skipped[flickr_layout["ids"][1]] and str(bad_jpg) in skipped[flickr_layout["ids"][3]]
    scores = json.loads((out / "scores.json").read_text())
    assert (scores["n_samples"], scores["n_skipped"]) == (3, 2)
    assert [r["id"] for r in read_csv(out / "per_sample.csv")] == [flickr_layout["ids"][i] for i in (0, 2, 4)]


def test_flickr_annotation_format_is_checked(tmp_path):
    path = tmp_path / "x.xml"
    path.write_text("<annotation><bbox><xmin>1</xmin><ymin>2</ymin><xmax>3</xmax><ymax>4</ymax></bbox></annotation>")
    with pytest.raises(decode.FileDecodeError, match="leading child"):
        annotations.read_flickr_boxes(path)
    path.write_text(flickr_xml("x", [[(10, 20, 30, 40)], [(0, 0, 256, 256)]]))
    assert annotations.read_flickr_boxes(path) == [(10, 20, 30, 40), (0, 0, 256, 256)]


def test_layouts_and_lists(tmp_path):
    with pytest.raises(FnacError, match="has frames/ but no audio/"):
        (tmp_path / "frames").mkdir()
        files.Layout.find(tmp_path)
    (tmp_path / "list.csv").write_text("a\nb\na\n")
    with pytest.raises(FnacError, match="list.csv:3: id 'a' repeats line 1"):
        annotations.read_id_list(tmp_path / "list.csv")
    (tmp_path / "vggsound.csv").write_text("abc,30,dog barking,train\nxyz,5,cat,test\n")
    assert annotations.read_labels(tmp_path / "vggsound.csv") == {"abc_000030": "dog barking", "xyz_000005": "cat"}


def test_validation_split_is_fixed_by_list_and_seed():
    ids = [f"clip{i:03d}" for i in range(101)]
    val = real.validation_split(ids, 0.5, seed=0)
    assert len(val) == 50 and val <= set(ids)
    assert real.validation_split(list(reversed(ids)), 0.5, seed=0) == val  # order does not matter
    assert real.validation_split(ids, 0.5, seed=1) != val


def test_training_on_a_real_layout(vggss_layout, tmp_path):
    """Train one epoch from the layout (train ids from a list), validate and test on the two halves of VGG-SS."""
    ids = tmp_path / "train_ids.txt"
    ids.write_text("".join(i + "\n" for i in vggss_layout["chosen"] + ["not_on_disk"]))
    cfg = preset("smoke", dataset="real", trainset="vggss_10k", train_root=str(vggss_layout["root"]),
                 train_ids=str(ids), testset="vggss", test_root=str(vggss_layout["root"]),
                 test_annotations=str(vggss_layout["json"]), test_split_csv=str(vggss_layout["split"]),
                 audio_rate=16000, visual_stage=0, audio_stage=0, embed_dim=16, batch_size=4, epochs=1,
                 warmup_epochs=1, eval_batch_size=4, w_fns_audio=0, w_fns_visual=0, w_tne=0)  # one epoch: NCE alone
    result = train(cfg, tmp_path / "run", progress=False)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["epochs_trained"] == 1 and np.isfinite(summary["test"]["ap50"])
    val_ids = real.validation_split(vggss_layout["listed"], 0.5, seed=cfg.data_seed)
    present = set(vggss_layout["chosen"])
    assert summary["test"]["n_samples"] == len(present - val_ids) and len(result.test.ids) == len(present - val_ids)
    assert not set(result.test.ids) & val_ids
    missing = read_csv(tmp_path / "run" / "missing_train.csv")
    assert [m["id"] for m in missing] == ["not_on_disk"]
    with pytest.raises(FnacError, match="different sample rates"):  # native rates cannot share a batch
        train(cfg.replace(audio_rate=None), tmp_path / "native", progress=False)


def test_a_validation_list_of_its_own_replaces_the_seeded_half(vggss_layout, tmp_path):
    chosen, absent = vggss_layout["chosen"], vggss_layout["absent"]
    val_csv, test_csv = tmp_path / "val.csv", tmp_path / "test.csv"
    val_csv.write_text("".join(i + "\n" for i in chosen[:3] + absent[:1]))
    test_csv.write_text("".join(i + "\n" for i in chosen[3:]))
    cfg = preset("smoke", dataset="real", trainset="vggss_10k", train_root=str(vggss_layout["root"]),
                 train_ids=str(test_csv), testset="vggss", test_root=str(vggss_layout["root"]),
                 test_annotations=str(vggss_layout["json"]), test_split_csv=str(test_csv),
                 val_split_csv=str(val_csv), audio_rate=16000, batch_size=2)
    parts = build_datasets(cfg)
    assert parts["val"].ids == chosen[:3] and [i for i, _ in parts["val"].missing] == absent[:1]
    assert parts["test"].ids == chosen[3:] and not parts["test"].missing
    test_csv.write_text("".join(i + "\n" for i in chosen[2:]))
    with pytest.raises(ConfigError, match=rf"val_split_csv=.*val.csv: 1 of its ids are also test ids \(first: "
                                          rf"{chosen[2]}\)"):
        build_datasets(cfg)
    with pytest.raises(ConfigError, match="val_split_csv=.*: needs test_split_csv"):
        cfg.replace(test_split_csv=None)


def test_ground_truth_empty_after_clipping_is_listed_never_scored(tmp_path, checkpoint):
    rng = np.random.default_rng(5)
    root = tmp_path / "root"
    entries = [("outside", [[1.2, 0.1, 1.5, 0.5]]),  # wholly right of the image: clipped to nothing
               ("inverted", [[0.6, 0.2, 0.3, 0.5]]),
               ("partly", [[-0.2, 0.1, 0.5, 1.3]]),  # keeps its inside part
               ("mixed", [[0.1, 0.1, 0.4, 0.4], [2.0, 2.0, 3.0, 3.0]])]
    for k, (ident, _) in enumerate(entries):
        add_sample(root, ident, k, rng)
    (tmp_path / "vggss.json").write_text(json.dumps([{"file": i, "class": "c", "bbox": b} for i, b in entries]))
    ds = real.open_testset("vggss", root, tmp_path / "vggss.json")
    assert sorted(ds.ids) == ["mixed", "partly"]
    assert [i for i, _ in ds.skipped] == ["outside", "inverted"]
    assert all("ground truth empty" in reason for _, reason in ds.skipped)
    expected = np.zeros((224, 224))
    for y in range(224):
        for x in range(224):
            expected[y, x] = 0 <= x < int(0.5 * 224) and int(0.1 * 224) <= y < 224
    np.testing.assert_array_equal(ds[ds.ids.index("partly")]["gt"].numpy(), expected)
    out = tmp_path / "eval"
    assert evaluate("--checkpoint", checkpoint, "--testset", "vggss", "--data-root", root, "--annotations",
                    tmp_path / "vggss.json", "--out", out) == 0  # without --skip-bad: an annotation fault
    scores = json.loads((out / "scores.json").read_text())
    assert (scores["n_samples"], scores["n_skipped"]) == (2, 2)
    assert [r["id"] for r in read_csv(out / "skipped.csv")] == ["outside", "inverted"]


def test_id_lists_and_annotations_with_a_byte_order_mark(tmp_path):
    (tmp_path / "ids.csv").write_text("\ufeffabc,dog\nxyz,cat\n", encoding="utf-8")
    assert annotations.read_id_list(tmp_path / "ids.csv") == [("abc", "dog"), ("xyz", "cat")]
    (tmp_path / "labels.csv").write_text("\ufeffabc,dog\n", encoding="utf-8")
    assert annotations.read_labels(tmp_path / "labels.csv") == {"abc": "dog"}
    (tmp_path / "vggss.json").write_text("\ufeff" + json.dumps([{"file": "abc", "class": "dog",
                                                                 "bbox": [[0, 0, 1, 1]]}]), encoding="utf-8")
    assert list(annotations.read_vggss_annotations(tmp_path / "vggss.json")) == ["abc"]


def test_real_vggss_boxes_outside_the_image(vggss_annotations):
    """How many real VGG-SS test boxes reach outside the image, and which samples keep no ground truth."""
    from fnac_lab import metrics

    partly, empty_samples = 0, []
    for e in vggss_annotations:
        partly += sum(any(v < 0 or v > 1 for v in b) for b in e["bbox"])
        if all(metrics.box_is_empty(metrics.vggss_box_to_pixels(b)) for b in e["bbox"]):
            empty_samples.append(e["file"])
    print(f"\nVGG-SS: {partly} boxes reach outside the image; samples without ground truth: {empty_samples}")
    # counted independently: a coordinate outside [0, 1], and a box whose clipped pixel extent is empty
    assert partly == sum(1 for e in vggss_annotations for b in e["bbox"] if min(b) < 0 or max(b) > 1)
    for ident in empty_samples:
        e = next(x for x in vggss_annotations if x["file"] == ident)
        for b in e["bbox"]:
            x0, y0, x1, y1 = (int(min(max(v, 0), 1) * 224) for v in b)
            assert x1 <= x0 or y1 <= y0
