"""The memory-mapped cache: written through the command line, read through CachedAVDataset, compared with an
independent scipy spectrogram of the centre window and with the per-sample reader."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import soundfile
import torch
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image

from fnac_lab.audio import spec_augment
from fnac_lab.cli import main
from fnac_lab.config import ConfigError, preset
from fnac_lab.data import CachedAVDataset, decode, files, real
from fnac_lab.datasets import build_datasets
from fnac_lab.train import train
from fnac_lab.utils import FnacError
from references import file_log_spectrogram

# (width, height, extension) of the frames; (channels, subtype, seconds) of the 16 kHz clips
FRAMES = [(500, 281, "png"), (240, 320, "jpg"), (224, 224, "jpg"), (97, 61, "png"), (640, 360, "jpg")]
CLIPS = [(1, "PCM_16", 10.0), (2, "FLOAT", 2.2), (1, "PCM_24", 3.0), (3, "PCM_16", 5.5), (2, "DOUBLE", 0.7)]
RATE = 16000


def make_root(root, n: int, seed: int = 0, rate=RATE):
    rng = np.random.default_rng(seed)
    (root / "frames").mkdir(parents=True)
    (root / "audio").mkdir()
    ids = [f"clip_{k:02d}" for k in range(n)]
    for k, ident in enumerate(ids):
        w, h, ext = FRAMES[k % len(FRAMES)]
        noise = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)  # noise: every 3 x 3 patch is unique
        Image.fromarray(noise).save(root / "frames" / f"{ident}.{ext}")
        channels, subtype, seconds = CLIPS[k % len(CLIPS)]
        t = np.arange(int(rate * seconds)) / rate
        x = 0.4 * np.sin(2 * np.pi * (300 + 97 * k) * t)[:, None] + 0.05 * rng.standard_normal((t.size, channels))
        soundfile.write(str(root / "audio" / f"{ident}.wav"), x, rate, subtype=subtype)
    return ids


def cache_cli(*args) -> int:
    return main(["cache", "--quiet", "--workers", "1", *map(str, args)])


@pytest.fixture(scope="module")
def cached(tmp_path_factory):
    root = tmp_path_factory.mktemp("root")
    ids = make_root(root, 6)
    listed = root / "ids.txt"
    listed.write_text("".join(i + "\n" for i in ids[:5] + ["absent_clip"]))
    out = tmp_path_factory.mktemp("caches") / "cache"
    assert cache_cli("--data-root", root, "--ids", listed, "--out", out) == 0
    return {"root": root, "ids": ids[:5], "out": out}


def test_cache_layout_and_missing_ids(cached):
    out = cached["out"]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["n"] == 5 and meta["spec_shape"] == [257, (3 * RATE - 512) // 238 + 1]
    assert (out / "ids.txt").read_text().split() == cached["ids"]
    assert [r[0] for r in csv.reader(open(out / "missing.csv"))][1:] == ["absent_clip"]
    assert not list(out.parent.glob(".*partial"))


def test_spectrogram_equals_scipy_to_float16_precision(cached):
    for split in ("train", "test"):
        ds = CachedAVDataset(cached["out"], split=split, audio_augment=False)
        for k, ident in enumerate(cached["ids"]):
            item = ds[k]
            assert item["id"] == ident and item["spec"].dtype == torch.float32
            ref = file_log_spectrogram(cached["root"] / "audio" / f"{ident}.wav")
            assert item["spec"].shape == (1, *ref.shape)
            # float16 storage: relative spacing 2^-10, so half of it as the tolerance, plus float32 rounding
            np.testing.assert_allclose(item["spec"][0].numpy() * 12, ref, rtol=2 ** -11, atol=2e-4)


def test_test_frames_are_the_bicubic_224_resize(cached):
    ds = CachedAVDataset(cached["out"], split="test")
    for k, ident in enumerate(cached["ids"]):
        item = ds[k]
        path = next((cached["root"] / "frames").glob(f"{ident}.*"))
        assert item["image"].dtype == torch.uint8 and item["image"].shape == (3, 224, 224)
        torch.testing.assert_close(item["image"], decode.resize_for_testing(decode.read_image(path)), rtol=0, atol=0)
        ref = np.asarray(Image.open(path).convert("RGB").resize((224, 224), Image.BICUBIC), dtype=float)
        diff = np.abs(item["image"].permute(1, 2, 0).numpy() - ref)
        assert diff.mean() < 2.0  # torchvision's and PIL's antialiased bicubic kernels on pixel noise
        masked = ds[k]["spec"]
        torch.testing.assert_close(masked, item["spec"])  # no SpecAugment on the test split


def _locate(crop: np.ndarray, frame: np.ndarray) -> tuple[int, int, bool]:
    """(top, left, flipped) of a 224 crop inside a frame [3, h, w], by an exact 3 x 3 patch match."""
    for flipped in (False, True):
        c = crop[:, :, ::-1] if flipped else crop
        windows = sliding_window_view(frame, (3, 3), axis=(1, 2))  # [3, h-2, w-2, 3, 3]
        hits = np.argwhere((windows == c[:, None, None, :3, :3]).all(axis=(0, 3, 4)))
        for top, left in hits:
            if top + 224 <= frame.shape[1] and left + 224 <= frame.shape[2] \
                    and np.array_equal(frame[:, top : top + 224, left : left + 224], c):
                return int(top), int(left), flipped
    raise AssertionError("the crop is not a 224 x 224 window of the resized frame")


def test_train_items_are_published_crops_of_the_whole_resized_frame(cached):
    ds = CachedAVDataset(cached["out"], split="train")
    path = cached["root"] / "frames" / f"{cached['ids'][0]}.png"  # 500 x 281: resized to 437 x 246
    frame = decode.resize_for_training(decode.read_image(path)).numpy()
    assert frame.shape == (3, 246, 437)
    torch.manual_seed(0)
    seen = [_locate(ds[0]["image"].numpy(), frame) for _ in range(25)]
    lefts = [s[1] for s in seen]
    assert max(lefts) - min(lefts) > 120  # crops range over the whole width, not a centre square
    assert {s[2] for s in seen} == {False, True} and max(s[0] for s in seen) <= 22
    # same draws as the per-sample reader: identical images under the same seed
    raw = real.RealAVDataset([files.Sample(cached["ids"][0], path, cached["root"] / "audio" / "clip_00.wav")],
                             split="train")
    torch.manual_seed(5)
    a = ds[0]["image"]
    torch.manual_seed(5)
    assert torch.equal(a, raw[0]["image"])


def test_train_spec_augment_masks_one_band_each(cached):
    plain = CachedAVDataset(cached["out"], split="train", audio_augment=False)
    masked = CachedAVDataset(cached["out"], split="train")
    torch.manual_seed(1)
    widths = []
    for _ in range(12):
        ref, got = plain[1]["spec"][0], masked[1]["spec"][0]
        changed = (got != ref)
        assert (got[changed] == 0).all()
        rows = torch.nonzero(changed.all(dim=1)).flatten()
        cols = torch.nonzero(changed.all(dim=0)).flatten()
        for band in (rows, cols):
            assert len(band) < 10 and (len(band) == 0 or band.max() - band.min() + 1 == len(band))
        outside = changed.clone()
        outside[rows] = False
        outside[:, cols] = False
        assert not outside.any()
        widths.append(len(rows) + len(cols))
    assert max(widths) > 0


def test_bad_files_and_mixed_rates(tmp_path, capsys):
    root = tmp_path / "root"
    ids = make_root(root, 3, seed=1)
    bad = root / "audio" / f"{ids[1]}.wav"
    bad.write_bytes(b"\x00" * 100)
    assert cache_cli("--data-root", root, "--out", tmp_path / "c1") == 2
    assert str(bad) in capsys.readouterr().err and not (tmp_path / "c1").exists()
    assert cache_cli("--data-root", root, "--out", tmp_path / "c2", "--skip-bad") == 0
    skipped = list(csv.DictReader(open(tmp_path / "c2" / "skipped.csv")))
    assert [s["id"] for s in skipped] == [ids[1]] and str(bad) in skipped[0]["reason"]
    assert CachedAVDataset(tmp_path / "c2", split="test").ids == [ids[0], ids[2]]
    assert cache_cli("--data-root", root, "--out", tmp_path / "c2", "--skip-bad") == 2  # never overwritten
    assert "already holds a cache" in capsys.readouterr().err
    soundfile.write(str(bad), np.zeros(30000), 22050)
    assert cache_cli("--data-root", root, "--out", tmp_path / "c3") == 2
    assert f"{bad}: spectrogram of" in capsys.readouterr().err
    assert cache_cli("--data-root", root, "--out", tmp_path / "c4", "--audio-rate", "16000", "--workers", "2") == 0
    assert json.loads((tmp_path / "c4" / "meta.json").read_text())["audio_rate"] == 16000
    parallel, serial = CachedAVDataset(tmp_path / "c4", split="test"), CachedAVDataset(tmp_path / "c2", split="test")
    assert parallel.ids == ids
    for k, j in ((0, 0), (2, 1)):  # 16 kHz clips: unchanged by --audio-rate 16000, same bytes from two processes
        assert torch.equal(parallel[k]["spec"], serial[j]["spec"]) and torch.equal(parallel[k]["image"], serial[j]["image"])


def test_training_reads_the_cache(cached, tmp_path):
    ann = tmp_path / "vggss.json"
    ann.write_text(json.dumps([{"file": i, "class": f"c{k % 2}", "bbox": [[0.1, 0.2, 0.6, 0.9]]}
                               for k, i in enumerate(cached["ids"])]))
    cfg = preset("smoke", dataset="real", cache_dir=str(cached["out"]), test_root=str(cached["root"]),
                 test_annotations=str(ann), visual_stage=0, audio_stage=0, embed_dim=16, batch_size=2, epochs=1,
                 warmup_epochs=1, eval_batch_size=4, w_fns_audio=0, w_fns_visual=0, w_tne=0)  # one epoch: NCE alone
    datasets = build_datasets(cfg)
    assert isinstance(datasets["train"], CachedAVDataset) and datasets["train"].ids == cached["ids"]
    assert not datasets["train"].audio_augment  # the training loop masks the batch
    assert sorted(datasets["val"].ids + datasets["test"].ids) == sorted(cached["ids"])
    result = train(cfg, tmp_path / "run", progress=False, datasets=datasets)
    assert result.summary["test"]["n_samples"] == len(datasets["test"])
    with pytest.raises(ConfigError, match="audio_rate"):
        build_datasets(cfg.replace(audio_rate=16000))


def test_item_masks_follow_the_batched_spec_augment_distribution():
    torch.manual_seed(0)
    n = 3000
    items = torch.stack([decode.mask_bands(torch.ones(1, 64, 50)) for _ in range(n)])[:, 0]
    batched = spec_augment(torch.ones(n, 1, 64, 50))[:, 0]
    for masks in (items, batched):
        assert ((masks == 0) | (masks == 1)).all()
    for dim in (2, 1):  # frequency bands (whole rows), then time bands (whole columns)
        widths = [np.bincount((m == 0).all(dim=dim).sum(dim=1).numpy(), minlength=10) / n for m in (items, batched)]
        assert len(widths[0]) == 10  # widths 0..9, as the published masks
        np.testing.assert_allclose(widths[0], widths[1], atol=0.03)
        np.testing.assert_allclose(widths[0], 0.1, atol=0.03)


def damaged_copy(cached, tmp_path, name, damage):
    import shutil

    copy = tmp_path / name
    shutil.copytree(cached["out"], copy)
    damage(copy)
    return copy


@pytest.mark.parametrize("name,damage,needle", [
    ("truncated", lambda c: (c / "specs.f16").write_bytes((c / "specs.f16").read_bytes()[:-100]),
     "specs.f16: {actual} bytes where the cache's meta.json implies {expected}"),
    ("appended", lambda c: (c / "train_frames.u8").write_bytes((c / "train_frames.u8").read_bytes() + b"\0" * 7),
     "train_frames.u8: {actual} bytes where the cache's meta.json implies {expected}"),
    ("deleted", lambda c: (c / "test_frames.u8").unlink(), "test_frames.u8: missing from the cache"),
    ("index", lambda c: np.save(c / "train_frames_index.npy", np.load(c / "train_frames_index.npy")[::-1].copy()),
     "train_frames_index.npy: checksum differs"),
    ("meta", lambda c: (c / "meta.json").write_text('{"version": 2, "n": '), "meta.json: unreadable"),
])
def test_a_damaged_cache_is_refused_when_opened(cached, tmp_path, name, damage, needle):
    copy = damaged_copy(cached, tmp_path, name, damage)
    meta = json.loads((cached["out"] / "meta.json").read_text())
    expected = {"specs.f16": meta["n"] * 257 * meta["spec_shape"][1] * 2,
                "train_frames.u8": meta["sizes"]["train_frames.u8"]}
    file = needle.split(":")[0]
    if file in expected and (copy / file).exists():
        needle = needle.format(actual=(copy / file).stat().st_size, expected=expected[file])
    for split in ("train", "test"):
        with pytest.raises(FnacError) as info:
            CachedAVDataset(copy, split)
        assert needle in str(info.value) and len(str(info.value).splitlines()) == 1
