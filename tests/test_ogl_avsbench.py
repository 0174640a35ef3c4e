"""AVSBench-S4 scores (mIoU, F-score with beta^2 = 0.3) and object-guided localisation, against numpy formulas
and an independent torchvision ResNet-18; evaluated end to end through the command line."""

from __future__ import annotations

import csv
import functools
import json

import numpy as np
import pytest
import scipy.ndimage
import soundfile
import timm
import torch
import torchvision
from PIL import Image
from safetensors.torch import load_file, save_file

from fnac_lab import metrics
from fnac_lab.cli import main
from fnac_lab.config import preset
from fnac_lab.data import real
from fnac_lab.ogl import OGLWeightsError, load_object_network
from fnac_lab.checkpoint import build_model
from fnac_lab.utils import normalise_images


def numpy_region(m: np.ndarray) -> np.ndarray:
    p = m.astype(np.float32)
    if p.max() != p.min():
        p = (p - p.min()) / (p.max() - p.min())
    return p >= np.sort(p.flatten())[p.size // 2]


def numpy_iou_f(m: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    r, g = numpy_region(m), mask > 0
    tp = float(np.sum(r & g))
    if g.sum() == 0:
        iou = np.sum(~r & ~g) / g.size
    else:
        iou = tp / np.sum(r | g)
    precision = tp / r.sum() if r.sum() else 0.0
    recall = tp / g.sum() if g.sum() else 0.0
    f = 1.3 * precision * recall / (0.3 * precision + recall) if precision + recall > 0 else 0.0
    return float(iou), float(f)


def numpy_ciou(m: np.ndarray, gt: np.ndarray) -> float:
    r = numpy_region(m).astype(float)
    return float((r * gt).sum() / (gt.sum() + (r * (gt == 0)).sum()))


def test_segmentation_scores_against_numpy():
    g = torch.Generator().manual_seed(0)
    maps = torch.nn.functional.interpolate(torch.randn(6, 1, 7, 7, generator=g), size=224, mode="bicubic")[:, 0]
    maps[5] = 0.25  # a constant map: every pixel is predicted
    masks = torch.zeros(6, 224, 224)
    masks[0, 50:150, 60:200] = 1
    masks[1, :, :112] = 1
    masks[2] = (torch.rand(224, 224, generator=g) > 0.7).float()
    masks[4, 10:20, 10:20] = 1  # mask 3 is empty: the complements are compared
    masks[5, 100:, 100:] = 1
    iou, f = metrics.mask_iou(maps, masks), metrics.f_score(maps, masks)
    assert iou.dtype == torch.float64 and f.shape == (6,)
    for k in range(6):
        ref_iou, ref_f = numpy_iou_f(maps[k].numpy(), masks[k].numpy())
        assert iou[k].item() == pytest.approx(ref_iou, abs=1e-12)
        assert f[k].item() == pytest.approx(ref_f, abs=1e-12)
    assert metrics.f_score(maps[0], masks[0]).dim() == 0
    summary = metrics.summarise_segmentation(iou, f)
    assert summary == pytest.approx({"miou": iou.mean().item(), "f_score": f.mean().item()})


@pytest.fixture(scope="module")
def object_weights(tmp_path_factory):
    torch.manual_seed(7)
    reference = timm.create_model("resnet18", pretrained=False)
    path = tmp_path_factory.mktemp("ogl") / "resnet18.safetensors"
    save_file(reference.state_dict(), str(path))
    return path


@functools.lru_cache(maxsize=2)
def torchvision_resnet18(weights) -> torch.nn.Module:
    net = torchvision.models.resnet18()
    net.load_state_dict(load_file(str(weights)))
    return net.eval()


def numpy_object_map(image_uint8: np.ndarray, weights, reduce: str = "mean_abs") -> np.ndarray:
    """torchvision ResNet-18 to layer4, the channel mean of |f| (published) or L2 norm in float64, bilinear
    (align_corners) by map_coordinates."""
    net = torchvision_resnet18(weights)
    x = (image_uint8.astype(np.float32) / 255 - np.array([0.485, 0.456, 0.406])[:, None, None]) \
        / np.array([0.229, 0.224, 0.225])[:, None, None]
    with torch.no_grad():
        t = torch.from_numpy(x.astype(np.float32))[None]
        t = net.maxpool(net.relu(net.bn1(net.conv1(t))))
        feat = net.layer4(net.layer3(net.layer2(net.layer1(t))))[0].double().numpy()
    energy = np.abs(feat).mean(axis=0) if reduce == "mean_abs" else np.sqrt((feat**2).sum(axis=0))
    h = energy.shape[0]
    coords = np.arange(224) * (h - 1) / 223
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    up = scipy.ndimage.map_coordinates(energy, [yy, xx], order=1)
    return (up - up.min()) / (up.max() - up.min())


@pytest.mark.parametrize("reduce", ["mean_abs", "l2"])
def test_object_network_matches_torchvision(object_weights, reduce):
    net = load_object_network(object_weights, reduce=reduce)
    image = torch.randint(0, 256, (2, 3, 224, 224), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    got = net(normalise_images(image)).numpy()
    for k in range(2):
        np.testing.assert_allclose(got[k], numpy_object_map(image[k].numpy(), object_weights, reduce), atol=2e-4)
    other = numpy_object_map(image[0].numpy(), object_weights, "l2" if reduce == "mean_abs" else "mean_abs")
    assert np.abs(got[0] - other).max() > 1e-2  # the two reductions are told apart


def test_missing_or_unreachable_object_weights(tmp_path, monkeypatch):
    with pytest.raises(OGLWeightsError, match="not found"):
        load_object_network(tmp_path / "nope.pth")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(OGLWeightsError, match="--ogl-weights PATH"):
        load_object_network()


@pytest.fixture(scope="module")
def avsbench(tmp_path_factory):
    """Five AVSBench-style frames (224 x 224 png), 1 s or 5 s wavs, binary masks (one of another size)."""
    root = tmp_path_factory.mktemp("avsbench")
    for d in ("frames", "audio", "masks"):
        (root / d).mkdir()
    rng = np.random.default_rng(3)
    ids = [f"video{k}_{k % 5 + 1}" for k in range(5)]
    for k, ident in enumerate(ids):
        coarse = rng.integers(0, 256, size=(15, 15, 3), dtype=np.uint8)
        Image.fromarray(coarse).resize((224, 224), Image.BILINEAR).save(root / "frames" / f"{ident}.png")
        seconds = 5.0 if k % 2 else 1.0
        x = 0.3 * np.sin(2 * np.pi * (300 + 50 * k) * np.arange(int(16000 * seconds)) / 16000)
        soundfile.write(str(root / "audio" / f"{ident}.wav"), x, 16000, subtype="PCM_16")
        size = 256 if k == 2 else 224
        mask = np.zeros((size, size), np.uint8)
        y0, x0 = rng.integers(0, size // 2, size=2)
        mask[y0 : y0 + size // 3, x0 : x0 + size // 2] = 255
        Image.fromarray(mask).save(root / "masks" / f"{ident}.png")
    split = root / "s4_test.csv"
    split.write_text("".join(f"{i},category{k % 2}\n" for k, i in enumerate(ids)))
    return {"root": root, "ids": ids, "split": split}


def test_avsbench_with_ogl_through_cli(avsbench, object_weights, tmp_path):
    cfg = preset("smoke", visual_stage=0, audio_stage=0, embed_dim=16, visual_dropout=0.0)
    torch.manual_seed(0)
    ckpt = tmp_path / "tiny.pt"
    torch.save({"config": cfg.to_dict(), "model": build_model(cfg).state_dict()}, ckpt)
    out = tmp_path / "out"
    assert main(["evaluate", "--quiet", "--workers", "0", "--checkpoint", str(ckpt), "--testset", "avsbench_s4",
                 "--data-root", str(avsbench["root"]), "--annotations", str(avsbench["root"] / "masks"),
                 "--split-csv", str(avsbench["split"]), "--out", str(out), "--ogl", "--ogl-weights",
                 str(object_weights), "--save-maps", "--batch-size", "2"]) == 0
    scores = json.loads((out / "scores.json").read_text())
    rows = list(csv.DictReader(open(out / "per_sample.csv")))
    maps, fused = np.load(out / "maps.npz"), np.load(out / "maps_ogl.npz")
    dataset = real.open_testset("avsbench_s4", avsbench["root"], avsbench["root"] / "masks",
                                split_csv=avsbench["split"])
    assert [r["id"] for r in rows] == avsbench["ids"] == dataset.ids
    columns = {k: [] for k in ("ciou", "iou", "f_score", "ciou_ogl", "iou_ogl", "f_score_ogl")}
    for k, r in enumerate(rows):
        ident = r["id"]
        mask = np.asarray(Image.open(avsbench["root"] / "masks" / f"{ident}.png").resize((224, 224), Image.NEAREST)) > 0
        image = dataset[k]["image"].numpy()
        obj = numpy_object_map(image, object_weights)
        av = maps[ident].astype(np.float64)
        av = (av - av.min()) / (av.max() - av.min())
        mixed = 0.4 * av + 0.6 * obj
        np.testing.assert_allclose(fused[ident], (mixed - mixed.min()) / (mixed.max() - mixed.min()), atol=5e-4)
        for suffix, m in (("", maps[ident]), ("_ogl", fused[ident])):
            iou, f = numpy_iou_f(m, mask)
            c = numpy_ciou(m, mask.astype(float))
            for name, value in (("iou", iou), ("f_score", f), ("ciou", c)):
                assert float(r[name + suffix]) == pytest.approx(value, abs=1e-6)
                columns[name + suffix].append(value)
        assert r["class"] == f"category{k % 2}"
    for suffix, part in (("", scores), ("_ogl", scores["ogl"])):
        assert part["miou"] == pytest.approx(np.mean(columns["iou" + suffix]), abs=1e-6)
        assert part["f_score"] == pytest.approx(np.mean(columns["f_score" + suffix]), abs=1e-6)
        assert part["ap50"] == pytest.approx(np.mean(np.array(columns["ciou" + suffix]) >= 0.5), abs=1e-9)
    assert scores["n_samples"] == 5 and "miou" in scores["reference_maps"]["oracle"]
    assert scores["ogl_object"] == "mean_abs"
