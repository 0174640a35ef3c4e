"""The stamps benchmark builder on a stand-in source generated here (every stamp of the class table as a coloured
ellipse with a tone), so that it runs without the packages: layouts the real-data readers read, exact ground truth,
seeded and resumable builds, one-line refusals. With the fetched packages a small real build goes through
``prepare`` and the annotation readers too."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
from PIL import Image, ImageDraw

from fnac_lab import metrics
from fnac_lab.cli import main
from fnac_lab.data import stamps as st
from fnac_lab.data.annotations import read_flickr_boxes, read_negatives_list, read_vggss_annotations

SMALL = ["--n-train", "4", "--n-val", "2", "--n-test", "3", "--seconds", "0.5", "--workers", "1", "--quiet"]


def write_stamp(stamps: Path, name: str, colour: tuple[int, int, int], rate: int = 22050) -> None:
    png = stamps / f"{name}.png"
    png.parent.mkdir(parents=True, exist_ok=True)
    im = Image.new("RGBA", (140, 100), (0, 0, 0, 0))
    ImageDraw.Draw(im).ellipse((10, 20, 130, 90), fill=(*colour, 255))
    im.save(png)
    t = np.arange(int(0.4 * rate)) / rate
    soundfile.write(stamps / f"{name}.ogg", 0.5 * np.sin(2 * np.pi * (200 + sum(colour)) * t), rate, format="OGG")
    soundfile.write(stamps / f"{name}_desc.ogg", 0.3 * np.sin(2 * np.pi * 700 * t), rate, format="OGG")


@pytest.fixture(scope="module")
def fake_source(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tuxpaint")
    rng = np.random.default_rng(0)
    for stamp in st.read_class_table():
        write_stamp(root / "stamps", stamp.name, tuple(int(v) for v in rng.integers(0, 255, 3)))
    for i in range(5):  # silent stamps: distractors
        im = Image.new("RGBA", (120, 120), (0, 0, 0, 0))
        ImageDraw.Draw(im).rectangle((10, 10, 110, 110), fill=(255, 255, 255, 255))
        (root / "stamps" / "town").mkdir(parents=True, exist_ok=True)
        im.save(root / "stamps" / "town" / f"box{i}.png")
    (root / "templates").mkdir()
    for b in st.read_backgrounds():
        Image.fromarray(rng.integers(0, 255, (200, 300, 3), dtype=np.uint8)).save(root / b.path)
    return root


def build(tmp_path: Path, source: Path, *extra: str, out: str = "root") -> Path:
    assert main(["stamps", "build", "--source", str(source), "--out", str(tmp_path / out), *SMALL, *extra]) == 0
    return tmp_path / out


def clips(root: Path) -> list[dict]:
    with open(root / "clips.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_the_layout_and_ground_truth_read_back_exactly(tmp_path, fake_source):
    root = build(tmp_path, fake_source)
    rows = clips(root)
    counts = {s: sum(r["split"] == s for r in rows) for s in dict.fromkeys(r["split"] for r in rows)}
    assert counts == {"train": 4, "val": 2, "test_heard": 3, "test_unseen_stamps": 3, "test_unheard_classes": 3,
                      "neg_offscreen": 1, "neg_silent": 1, "neg_speech": 1}
    assert sorted(p.stem for p in (root / "videos").glob("*.mp4")) == sorted(r["id"] for r in rows)
    roles = {s.name: s.role for s in st.read_class_table()}
    assert all(roles[r["stamp"]] == "train" for r in rows if r["split"] in ("train", "val", "test_heard"))
    assert all(roles[r["stamp"]] == "heldout_stamp" for r in rows if r["split"] == "test_unseen_stamps")
    assert all(roles[r["stamp"]] == "heldout_class" for r in rows if r["split"] == "test_unheard_classes")
    vggss = read_vggss_annotations(root / "vggss.json")
    for r in rows:
        if r["split"] in ("train",) or r["split"].startswith("neg_"):
            assert r["id"] not in vggss and not (root / "masks" / f"{r['id']}.png").exists()
            continue
        mask = np.asarray(Image.open(root / "masks" / f"{r['id']}.png")) > 0
        ys, xs = np.nonzero(mask)
        box = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        assert tuple(int(v) for v in r["box"].split()) == box
        label, boxes = vggss[r["id"]]
        assert label == r["class"] and [int(np.clip(v, 0, 1) * 224) for v in boxes[0]] == list(box)
        flickr = read_flickr_boxes(root / "flickr" / f"{r['id']}.xml")
        assert len(flickr) == 2 and all([int(224 * v / 256) for v in b] == list(box) for b in flickr)
        expected = np.zeros((224, 224))
        expected[box[1]:box[3], box[0]:box[2]] = 1
        assert np.array_equal(metrics.gt_map([list(box)] * 2, 224, mode="flickr").numpy(), expected)
    negatives = read_negatives_list(root / "vggss_test_plus_silent.csv")
    assert sorted(v for v, _ in negatives) == sorted(r["id"] for r in rows if r["split"].startswith("neg_"))
    with open(root / "train.csv", newline="") as fh:
        assert [tuple(x) for x in csv.reader(fh)] == [(r["id"], r["class"]) for r in rows if r["split"] == "train"]


def test_prepare_reads_the_videos_and_the_sounds_are_where_they_should_be(tmp_path, fake_source):
    root = build(tmp_path, fake_source)
    assert main(["prepare", "--videos", str(root / "videos"), "--out", str(root), "--workers", "1", "--quiet"]) == 0
    for r in clips(root):
        audio, rate = soundfile.read(root / "audio" / f"{r['id']}.wav")
        assert rate == 16000 and abs(len(audio) - 8000) <= 2048, r["id"]
        peak = np.abs(audio).max()
        assert (peak < 0.02) if r["split"] == "neg_silent" else (peak > 0.15), (r["id"], peak)
        with Image.open(root / "frames" / f"{r['id']}.jpg") as im:
            assert im.size == (224, 224)


def test_a_seed_gives_the_same_build_and_a_rerun_resumes(tmp_path, fake_source):
    a, b = build(tmp_path, fake_source, out="a"), build(tmp_path, fake_source, out="b")
    for name in ("clips.csv", "vggss.json", "train.csv", "masks/val_000001.png"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    c = build(tmp_path, fake_source, "--seed", "1", out="c")
    assert (a / "clips.csv").read_bytes() != (c / "clips.csv").read_bytes()
    kept = {p.name: p.stat().st_mtime_ns for p in (a / "videos").glob("*.mp4")}
    (a / "videos" / "train_000002.mp4").unlink()
    (a / "videos" / ".train_000003.mp4.999.tmp").write_bytes(b"half")  # what a killed run leaves
    build(tmp_path, fake_source, out="a")
    after = {p.name: p.stat().st_mtime_ns for p in (a / "videos").glob("*.mp4")}
    assert after.keys() == kept.keys() and not list((a / "videos").glob(".*.tmp"))
    assert [n for n in kept if after[n] != kept[n]] == ["train_000002.mp4"]


def test_a_build_killed_mid_way_leaves_only_whole_files_and_resumes(tmp_path, fake_source):
    """SIGKILL to the build and its worker pool while clips are written: every video in place is whole (equal to an
    uninterrupted build's), and a rerun finishes the same build."""
    sizes = ["--n-train", "24", "--n-val", "2", "--n-test", "4", "--seconds", "0.5", "--quiet"]
    reference = tmp_path / "reference"
    assert main(["stamps", "build", "--source", str(fake_source), "--out", str(reference), *sizes]) == 0
    expected = {p.name: p.read_bytes() for p in (reference / "videos").glob("*.mp4")}
    root = tmp_path / "killed"
    command = [sys.executable, "-m", "fnac_lab", "stamps", "build", "--source", str(fake_source), "--out", str(root),
               *sizes, "--workers", "2"]
    proc = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline and len(list(root.glob("videos/*.mp4"))) < 5:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = {p.name: p.read_bytes() for p in (root / "videos").glob("*.mp4")}
    assert 5 <= len(done) < len(expected), "the kill came before the first clips or after the last"
    assert all(done[name] == expected[name] for name in done)  # no video in place is partial
    assert main(["stamps", "build", "--source", str(fake_source), "--out", str(root), *sizes]) == 0
    assert {p.name: p.read_bytes() for p in (root / "videos").glob("*.mp4")} == expected
    assert not list(root.rglob(".*.tmp"))
    for name in ("clips.csv", "vggss.json", "train.csv", "test_heard.csv"):
        assert (root / name).read_bytes() == (reference / name).read_bytes(), name


def one_line(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


def test_a_folder_is_built_once_with_one_set_of_settings(tmp_path, fake_source, capsys):
    root = build(tmp_path, fake_source)
    err = one_line(capsys, ["stamps", "build", "--source", str(fake_source), "--out", str(root), *SMALL,
                            "--seed", "3"])
    assert "other settings" in err and "new --out" in err
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    err = one_line(capsys, ["stamps", "build", "--source", str(fake_source), "--out", str(tmp_path / "other"), *SMALL])
    assert "not empty" in err and (tmp_path / "other" / "notes.txt").read_text() == "mine"
    err = one_line(capsys, ["stamps", "build", "--source", str(fake_source), "--out", str(tmp_path / "x"),
                            *SMALL, "--n-train", "0"])
    assert "--n-train 0" in err


def broken_copy(tmp_path: Path, fake_source: Path, stamp: str, damage) -> Path:
    import shutil

    copy = tmp_path / "broken"
    shutil.copytree(fake_source, copy)
    damage(copy / "stamps" / stamp)
    return copy


def rgb_only(base: Path) -> None:
    Image.open(f"{base}.png").convert("RGB").save(f"{base}.png")


def empty_alpha(base: Path) -> None:
    Image.new("RGBA", (50, 50), (9, 9, 9, 0)).save(f"{base}.png")


def tiny_recording(base: Path) -> None:
    soundfile.write(f"{base}.ogg", np.full(100, 0.5), 22050, format="OGG")  # 4.5 ms


@pytest.mark.parametrize("damage, says", [
    (lambda base: Path(f"{base}.png").write_bytes(b"not a png"), "cannot be read"),
    (lambda base: Path(f"{base}.ogg").write_bytes(b"OggS broken"), "cannot be read"),
    (rgb_only, "no alpha channel"),
    (empty_alpha, "alpha channel is empty"),
    (tiny_recording, "too short to place"),
    (lambda base: Path(f"{base}.png").unlink(), "missing from the source"),
])
def test_a_bad_stamp_is_one_line_or_a_listed_skip(tmp_path, fake_source, capsys, damage, says):
    stamp = "animals/birds/crow"
    source = broken_copy(tmp_path, fake_source, stamp, damage)
    err = one_line(capsys, ["stamps", "build", "--source", str(source), "--out", str(tmp_path / "out"), *SMALL])
    assert says in err and "crow" in err and "--skip-bad" in err
    assert not (tmp_path / "out" / "videos").exists() or not list((tmp_path / "out" / "videos").iterdir())
    root = build(tmp_path, source, "--skip-bad", out="skipping")
    with open(root / "skipped.csv", newline="") as fh:
        assert [r["stamp"] for r in csv.DictReader(fh)] == [stamp]
    assert all(r["stamp"] != stamp for r in clips(root))


def test_real_recordings_and_photographs_go_through_the_whole_real_pipeline(tmp_path):
    """build -> prepare -> cache -> train (dataset=real, class labels from train.csv) -> evaluate on the
    VGG-SS-, Flickr-, AVSBench- and extended-style sets."""
    if not (st.default_source() / "stamps").is_dir():
        pytest.skip(f"Tux Paint stamps are not fetched into {st.default_source()} (make stamps)")
    root, run = tmp_path / "stamps", tmp_path / "run"
    assert main(["stamps", "build", "--out", str(root), "--n-train", "32", "--n-val", "4", "--n-test", "8",
                 "--seconds", "3", "--workers", "1", "--quiet", "--prepare"]) == 0
    assert json.loads((root / "build.json").read_text())["packages"][0].startswith("tuxpaint-stamps-default")
    assert json.loads((root / "cache" / "meta.json").read_text())["n"] == 32
    # the stamps preset reads every path under test_root; the sizes shrink for the test
    settings = dict(test_root=root, class_bias_p=0.5, epochs=1, warmup_epochs=0, batch_size=16, embed_dim=32,
                    eval_batch_size=4)
    sets = [f"--set={k}={v}" for k, v in settings.items()]
    assert main(["train", "--preset", "stamps", "--out", str(run), "--quiet", *sets]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["cache_dir"] == str(root / "cache") and config["val_split_csv"] == str(root / "val.csv")
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert history and 0 < history[0]["fn_ratio"] < 1  # same-class pairs in batches: labels were read
    summary = json.loads((run / "summary.json").read_text())
    assert summary["test"]["n_samples"] == 8  # test_heard whole: the validation clips are val.csv's own
    checkpoint = str(run / "checkpoints" / "best.pt")
    for testset, annotations, split in (("vggss", "vggss.json", "test_unseen_stamps"), ("flickr", "flickr", "test_heard"),
                                        ("avsbench_s4", "masks", "test_unheard_classes"),
                                        ("vggss_extended", "vggss.json", "test_heard")):
        out = tmp_path / "eval" / testset
        assert main(["evaluate", "--checkpoint", checkpoint, "--testset", testset, "--data-root", str(root),
                     "--annotations", str(root / annotations), "--split-csv", str(root / f"{split}.csv"),
                     "--out", str(out), "--workers", "0", "--quiet"]) == 0
        scores = json.loads((out / "scores.json").read_text())
        assert scores["n_samples"] == 8 and scores["n_missing"] == 0
        if testset != "avsbench_s4":  # boxes are large enough for the median threshold (a mask's pixels may not be)
            assert scores["reference_maps"]["oracle"]["ap50"] >= 0.75, scores["reference_maps"]
        assert testset != "vggss_extended" or scores["n_negatives"] == 8
