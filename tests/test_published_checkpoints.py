"""Checkpoints in the published code's format (FNAC_AVL's and EZ-VSL's training scripts), imported with
``fnac-lab import-checkpoint``. No released file can be downloaded here, so the files are written by this test: the
published model's architecture rebuilt from torchvision (its four parts ``imgnet``, ``img_proj``, ``audnet``,
``aud_proj``), its forward written out as published, and its state dict saved in the published training script's
dict, with and without DistributedDataParallel's ``module.`` prefixes."""

from __future__ import annotations

import hashlib
import json
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from PIL import Image

from fnac_lab.checkpoint import load_checkpoint
from fnac_lab.cli import main
from fnac_lab.data import real
from fnac_lab.utils import normalise_images



class PublishedModel(nn.Module):
    """The published localiser's modules, under the published names (torchvision's ResNet-18 for both streams)."""

    def __init__(self, dim: int = 512):
        super().__init__()
        self.imgnet = torchvision.models.resnet18()
        self.imgnet.avgpool, self.imgnet.fc = nn.Identity(), nn.Identity()
        self.img_proj = nn.Conv2d(512, dim, kernel_size=1)
        self.audnet = torchvision.models.resnet18()
        self.audnet.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.audnet.avgpool, self.audnet.fc = nn.AdaptiveMaxPool2d((1, 1)), nn.Identity()
        self.aud_proj = nn.Linear(512, dim)

    def forward(self, image: torch.Tensor, spec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Published inference (dropout is off in eval): the visual map and the audio embedding, both unit norm."""
        b = image.shape[0]
        img = self.imgnet(image).unflatten(1, (512, image.shape[2] // 32, image.shape[3] // 32))
        img = F.normalize(self.img_proj(img), dim=1)
        aud = F.normalize(self.aud_proj(self.audnet(spec)), dim=1)
        return img, aud


def published_maps(model: PublishedModel, image: torch.Tensor, spec: torch.Tensor) -> torch.Tensor:
    """The published localisation map: each sample's own similarity map, upsampled bicubically to 224."""
    img, aud = model(image, spec)
    own = torch.einsum("nchw,nc->nhw", img, aud) / 0.03
    return F.interpolate(own[:, None], size=(224, 224), mode="bicubic", align_corners=False)[:, 0]


def published_model(seed: int = 0) -> PublishedModel:
    torch.manual_seed(seed)
    model = PublishedModel()
    with torch.no_grad():  # move the batch-norm statistics off their initial values, as training would
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def write_published(path: Path, model: nn.Module, *, ddp: bool = False, **entries) -> Path:
    """A checkpoint as the published training script saves it (numpy scores, as its evaluator returns them)."""
    weights = {("module." if ddp else "") + k: v for k, v in model.state_dict().items()}
    state = {"model": weights, "optimizer": torch.optim.Adam(model.parameters(), lr=1e-4).state_dict(),
             "epoch": 20, "best_cIoU": np.float64(0.3950), "best_Auc": np.float64(0.3966), **entries}
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> dict:
    model = published_model()
    folder = tmp_path_factory.mktemp("published")
    return {"model": model, "plain": write_published(folder / "best.pth", model),
            "ddp": write_published(folder / "best_ddp.pth", model, ddp=True)}


def import_checkpoint(*args) -> int:
    return main(["import-checkpoint", *map(str, args)])


@pytest.mark.parametrize("variant", ["plain", "ddp"])
def test_imported_model_computes_the_published_forward(source, tmp_path, variant, capsys):
    path = source[variant]
    assert import_checkpoint(path, "--trained-on", "vggss_144k", "--out", tmp_path / "imported") == 0
    assert "published VGG-SS AP50 39.50, AUC 39.66" in capsys.readouterr().out
    model, cfg, state = load_checkpoint(tmp_path / "imported" / "checkpoint.pt")
    assert (cfg.method, cfg.trainset, cfg.tau, cfg.embed_dim, cfg.visual_dropout) == ("fnac", "vggss_144k", 0.03, 512, 0.9)
    gen = torch.Generator().manual_seed(1)
    image, spec = torch.randn(2, 3, 224, 224, generator=gen), torch.randn(2, 1, 257, 201, generator=gen)
    with torch.no_grad():
        ours, theirs = model(image, spec), source["model"](image, spec)
        for a, b in zip(ours, theirs):
            assert torch.allclose(a, b, atol=1e-6), (a - b).abs().max()
        assert torch.allclose(model.localise(image, spec), published_maps(source["model"], image, spec), atol=1e-4)
    record = json.loads((tmp_path / "imported" / "source.json").read_text())
    assert record == state["source"]
    assert record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest() and record["file"] == path.name
    assert record["in_file"] == {"epoch": 20, "best_cIoU": 0.3950, "best_Auc": 0.3966}
    assert record["published_vggss"] == {"ap50": 39.50, "auc": 39.66} and state["epoch"] == 19



#: This workbench's module names -> the published parts', typed from the published model's definition.
TO_PUBLISHED = {"visual.backbone.": "imgnet.", "visual.proj.": "img_proj.", "audio.backbone.": "audnet.",
                "audio.proj.": "aud_proj."}


def test_a_paper_model_round_trips_bit_for_bit(tmp_path):
    """A model of the ``paper`` preset saved in the published format (as DDP saves it) imports to the same tensors."""
    from fnac_lab.checkpoint import build_model
    from fnac_lab.config import preset

    torch.manual_seed(3)
    model = build_model(preset("paper", visual_pretrained=False), progress=False)
    weights = {}
    for key, value in model.state_dict().items():
        ours = next(p for p in TO_PUBLISHED if key.startswith(p))
        weights["module." + TO_PUBLISHED[ours] + key[len(ours):]] = value
    torch.save({"model": weights, "epoch": 1, "best_cIoU": 0.0, "best_Auc": 0.0}, tmp_path / "round.pth")
    assert import_checkpoint(tmp_path / "round.pth", "--out", tmp_path / "out") == 0
    imported, _, _ = load_checkpoint(tmp_path / "out" / "checkpoint.pt")
    theirs, ours = model.state_dict(), imported.state_dict()
    assert theirs.keys() == ours.keys()
    assert all(torch.equal(theirs[k], ours[k]) for k in theirs)

def test_ezvsl_format_and_rows_without_published_figures(source, tmp_path):
    assert import_checkpoint(source["plain"], "--format", "ezvsl", "--out", tmp_path / "ez") == 0
    _, cfg, state = load_checkpoint(tmp_path / "ez" / "checkpoint.pt")
    assert (cfg.method, cfg.visual_dropout, state["source"]["published_vggss"]) == ("nce", 0.0, None)
    assert "EZ-VSL" in state["source"]["description"]


def refusal(capsys, *args) -> str:
    assert import_checkpoint(*args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_mismatched_files_are_refused_naming_the_key(source, tmp_path, capsys):
    model = source["model"]
    weights = model.state_dict()
    cases = {
        "missing": ({k: v for k, v in weights.items() if k != "img_proj.bias"},
                    "key 'img_proj.bias' of the fnac model of preset 'paper' is missing (1 missing keys)"),
        "extra": ({**weights, "imgnet.fc.weight": torch.zeros(1000, 512)},
                  "key 'imgnet.fc.weight' is not in the fnac model of preset 'paper' (1 such keys)"),
        "shape": ({**weights, "aud_proj.weight": torch.zeros(128, 512), "aud_proj.bias": torch.zeros(128)},
                  "key 'aud_proj.weight' has shape [128, 512], the fnac model of preset 'paper' has [512, 512] "
                  "(2 keys of other shapes)"),
        "stranger": ({**weights, "head.weight": torch.zeros(3)}, "key 'head.weight' belongs to no part of the "
                                                                 "published model"),
    }
    for name, (state, message) in cases.items():
        path = tmp_path / f"{name}.pth"
        torch.save({"model": state, "epoch": 3}, path)
        out = tmp_path / f"out_{name}"
        assert f"{path}: {message}" in refusal(capsys, path, "--out", out)
        assert not out.exists() or not any(out.iterdir())  # nothing half written
    own = tmp_path / "own.pt"
    torch.save({"config": {}, "model": weights}, own)
    assert "a fnac-lab checkpoint already" in refusal(capsys, own, "--out", tmp_path / "o1")
    plain = tmp_path / "list.pth"
    torch.save([1, 2], plain)
    assert "not a checkpoint of the published code" in refusal(capsys, plain, "--out", tmp_path / "o2")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    assert "exists and is not an empty folder" in refusal(capsys, source["plain"], "--out", tmp_path / "taken")
    assert (tmp_path / "taken" / "notes.txt").read_text() == "mine"
    assert "checkpoint not found" in refusal(capsys, tmp_path / "absent.pth", "--out", tmp_path / "o3")


class Payload:
    """What a malicious checkpoint hides: unpickling it would run a shell command."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("where", ["best_cIoU", "optimizer", "weight"])
def test_a_malicious_pickle_is_refused_without_running(source, tmp_path, capsys, where):
    marker = tmp_path / "ran"
    model = source["model"]
    path = tmp_path / "evil.pth"
    if where == "weight":
        torch.save({"model": {**model.state_dict(), "img_proj.bias": Payload(marker)}, "epoch": 20}, path)
    else:
        write_published(path, model, **{where: Payload(marker)})
    err = refusal(capsys, path, "--out", tmp_path / "out")
    assert re.search(r"refused: it names (posix|os)\.system", err), err
    assert not marker.exists() and not (tmp_path / "out" / "checkpoint.pt").exists()


def test_numpy_scores_pickled_by_numpy_1_are_read(source, tmp_path):
    """Released files from 2023 name numpy 1's module (``numpy.core.multiarray``) for their scores."""
    path = tmp_path / "legacy.pth"
    state = {"model": source["model"].state_dict(), "epoch": 20, "best_cIoU": np.float64(0.35), "best_Auc": np.float64(0.38)}
    torch.save(state, path, _use_new_zipfile_serialization=False)
    data = path.read_bytes()
    assert b"numpy._core.multiarray" in data
    path.write_bytes(data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    assert import_checkpoint(path, "--out", tmp_path / "out") == 0
    assert json.loads((tmp_path / "out" / "source.json").read_text())["in_file"]["best_cIoU"] == 0.35
    with pytest.raises(pickle.UnpicklingError):  # the plain loader alone would refuse them
        torch.load(path, weights_only=True)


# --- the imported checkpoint through evaluation ---------------------------------------------------------------------

IDS = [f"clip{k:04d}_000001" for k in range(8)]


@pytest.fixture(scope="module")
def vggss_root(tmp_path_factory) -> Path:
    """A VGG-SS-style layout: 8 clips of two classes, boxes in vggss.json, a test list, two extended negatives, and
    Flickr-style XML boxes and AVSBench-style masks of the same frames."""
    root = tmp_path_factory.mktemp("vggss")
    for d in ("frames", "audio", "Annotations", "masks"):
        (root / d).mkdir()
    rng = np.random.default_rng(0)
    entries = []
    for k, ident in enumerate(IDS):
        coarse = rng.integers(0, 256, size=(12, 16, 3), dtype=np.uint8)
        Image.fromarray(coarse).resize((320, 240), Image.BILINEAR).save(root / "frames" / f"{ident}.jpg")
        t = np.arange(16000) / 16000
        soundfile.write(str(root / "audio" / f"{ident}.wav"), 0.4 * np.sin(2 * np.pi * (200 + 120 * k) * t), 16000,
                        subtype="PCM_16")
        x0, y0 = rng.uniform(0, 0.5, size=2)
        box = [round(x0, 3), round(y0, 3), round(x0 + 0.4, 3), round(y0 + 0.4, 3)]
        entries.append({"file": ident, "class": "dog barking" if k % 2 else "church bell ringing", "bbox": [box]})
        pixels = [int(224 * v) for v in box]
        (root / "Annotations" / f"{ident}.xml").write_text(
            "<annotation><object><bbox><name>x</name>" + "".join(
                f"<{n}>{v}</{n}>" for n, v in zip(("xmin", "ymin", "xmax", "ymax"), pixels)) + "</bbox></object></annotation>")
        mask = np.zeros((224, 224), np.uint8)
        mask[pixels[1]:pixels[3], pixels[0]:pixels[2]] = 255
        Image.fromarray(mask).save(root / "masks" / f"{ident}.png")
    (root / "vggss.json").write_text(json.dumps(entries))
    (root / "vggss_test.csv").write_text("".join(f"{i}\n" for i in IDS))
    (root / "s4_test.csv").write_text("".join(f"{i},{e['class']}\n" for i, e in zip(IDS, entries)))
    (root / "vggss_test_plus_silent.csv").write_text(
        f"video,audio,label\n{IDS[0]},{IDS[1]},non-sounding\n{IDS[2]},{IDS[3]},non-sounding\n")
    return root


@pytest.fixture(scope="module")
def imported(source, vggss_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("imported") / "fnac"
    root = vggss_root
    assert import_checkpoint(source["plain"], "--trained-on", "vggss_144k", "--out", out,
                             f"--set=test_root={root}", f"--set=test_annotations={root / 'vggss.json'}",
                             f"--set=test_split_csv={root / 'vggss_test.csv'}", "--set=num_workers=0",
                             "--set=eval_batch_size=4") == 0
    return out / "checkpoint.pt"


def evaluate(checkpoint: Path, out: Path, testset: str, root: Path, annotations: Path, *extra) -> dict:
    assert main(["evaluate", "--quiet", "--workers", "0", "--checkpoint", str(checkpoint), "--testset", testset,
                 "--data-root", str(root), "--annotations", str(annotations), "--out", str(out), *map(str, extra)]) == 0
    return json.loads((out / "scores.json").read_text())


def test_imported_checkpoint_scores_as_the_published_model(source, imported, vggss_root, tmp_path, capsys):
    root = vggss_root
    scores = evaluate(imported, tmp_path / "vggss", "vggss", root, root / "vggss.json", "--save-maps")
    printed = capsys.readouterr().out
    maps = np.load(tmp_path / "vggss" / "maps.npz")
    dataset = real.open_testset("vggss", root, root / "vggss.json")
    for k, ident in enumerate(dataset.ids):
        item = dataset[k]
        with torch.no_grad():
            theirs = published_maps(source["model"], normalise_images(item["image"][None]), item["spec"][None])[0]
        np.testing.assert_allclose(maps[ident], theirs.numpy(), atol=1e-3, rtol=1e-4)
    gaps = (100 * scores["ap50"] - 39.50, 100 * scores["auc"] - 39.66)
    verdict = "parity" if max(abs(g) for g in gaps) <= 3.0 else "outside the tolerance"
    assert (f"published VGG-SS AP50 39.50, AUC 39.66; measured {100 * scores['ap50']:.2f} ({gaps[0]:+.2f}), "
            f"{100 * scores['auc']:.2f} ({gaps[1]:+.2f}): {verdict} (tolerance 3 points)") in printed
    extended = evaluate(imported, tmp_path / "ext", "vggss_extended", root, root / "vggss.json")
    assert extended["n_negatives"] == 2 and extended["ap50"] == scores["ap50"]
    flickr = evaluate(imported, tmp_path / "flickr", "flickr", root, root / "Annotations")
    assert flickr["n_samples"] == len(IDS)
    assert "published VGG-SS" not in capsys.readouterr().out  # the published figures are VGG-SS's only


def test_imported_checkpoint_with_ogl_on_avsbench(imported, vggss_root, tmp_path):
    torch.manual_seed(5)
    weights = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    scores = evaluate(imported, tmp_path / "s4", "avsbench_s4", vggss_root, vggss_root / "masks", "--split-csv",
                      vggss_root / "s4_test.csv", "--ogl", "--ogl-weights", weights)
    assert scores["n_samples"] == len(IDS) and "miou" in scores and "miou" in scores["ogl"]


def test_the_analysis_notebooks_open_an_imported_checkpoint(imported):
    """Notebooks 03, 04 and 05 load their models and their split through these two calls (they run whole on a
    checkpoint of real data in tests/test_stamps_notebooks.py); an imported checkpoint needs no training set."""
    from fnac_lab import analysis

    pair = analysis.load_or_train_model_pair(checkpoint=imported, smoke=True)
    data = analysis.evaluation_split(pair.cfg, "test")  # the seeded test half of the annotated set
    assert list(pair.models) == ["FNAC"] and pair.source == f"checkpoints {imported}"
    assert len(data) == len(IDS) // 2 and sorted(data.class_names) == ["church bell ringing", "dog barking"]
    batch = data.batch(range(len(data)))
    maps = analysis.localise(pair.models["FNAC"], data, batch_size=2).maps
    with torch.no_grad():
        own = pair.models["FNAC"].localise(normalise_images(batch["image"]), batch["spec"])
    assert torch.allclose(torch.as_tensor(maps), own, atol=1e-4)


def test_evaluate_scores_the_configured_test_split_without_a_training_set(imported, tmp_path):
    assert main(["evaluate", "--quiet", "--checkpoint", str(imported), "--out", str(tmp_path / "test")]) == 0
    scores = json.loads((tmp_path / "test" / "scores.json").read_text())
    assert (scores["split"], scores["n_samples"]) == ("test", len(IDS) // 2)


def test_the_parity_table_holds_the_published_figures():
    """docs/published-checkpoints.md lists the four releases with the figures of their README (typed here from it)."""
    page = (Path(__file__).resolve().parents[1] / "docs" / "published-checkpoints.md").read_text()
    rows = re.findall(r"^\| `(\w+)` \| ([\d.]+) \| ([\d.]+) \| .* \| \|$", page, re.M)
    assert rows == [("flickr_10k", "35.27", "38.00"), ("flickr_144k", "33.93", "37.29"),
                    ("vggss_10k", "37.29", "38.99"), ("vggss_144k", "39.50", "39.66")]
    from fnac_lab.paper import PARITY_TOLERANCE, PUBLISHED_CHECKPOINTS

    assert {(r.trainset, f"{r.vggss_ap50:.2f}", f"{r.vggss_auc:.2f}") for r in PUBLISHED_CHECKPOINTS.values()} == set(rows)
    assert f"**Tolerance: {PARITY_TOLERANCE:g} percentage points**" in page
