"""Every fast path computes what the plain path computes: bf16 autocast (to its tolerance), channels_last,
torch.compile, the single similarity einsum, uint8 batches normalised on the device, the persistent
loader, ground truth drawn on the device and the batched evaluator."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torchvision.transforms.v2 as v2

from fnac_lab import metrics
from fnac_lab.config import preset
from fnac_lab.scoring import evaluate_model
from fnac_lab.methods import build_method
from fnac_lab.checkpoint import build_model
from fnac_lab.methods import weighted_total
from fnac_lab.train import batch_sampler, batch_terms, train_loader
from fnac_lab.utils import IMAGENET_MEAN, IMAGENET_STD, normalise_images
from references import naive_ciou


def loss_terms(img, aud, labels=None, **settings):
    """The four terms of the ``fnac`` method built with ``settings`` (its options, and ``tau``)."""
    tau = settings.pop("tau", 0.03)
    return build_method("fnac", settings, tau=tau).terms(img, aud, labels=labels)


CPU = torch.device("cpu")
CFG = dict(visual_stage=2, audio_stage=2, embed_dim=32, image_size=32, audio_augment=False, batch_size=8,
           warmup_epochs=0)
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def make_batch(n: int = 8, seed: int = 0, size: int = 32) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g),
            "spec": torch.randn(n, 1, 32, 24, generator=g)}


def fresh_model(cfg, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(cfg).eval()  # dropout off: both paths see the same network


def losses_and_grads(model, cfg, batch, device=CPU, **kwargs):
    model.zero_grad()
    terms = batch_terms(model, batch, cfg, cfg.build_method(), device, **kwargs)
    weighted_total(terms, cfg.build_method().weights(0)).backward()
    grads = torch.cat([p.grad.flatten().float().cpu() for p in model.parameters()])
    return {k: v.item() for k, v in terms.items()}, grads


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    return ((got - expected).norm() / expected.norm()).item()


def test_bf16_autocast_stays_within_tolerance():
    # in training mode (batch statistics), the regime autocast serves; bf16 keeps 8 mantissa bits, and at
    # tau = 0.03 the gradients of a fresh network carry that noise (cosine about 0.98 here)
    cfg = preset("smoke", **{**CFG, "visual_dropout": 0.0})
    model = fresh_model(cfg).train()
    batch = make_batch()
    dtypes = []
    hook = model.visual.backbone.register_forward_hook(lambda m, i, o: dtypes.append(o[-1].dtype))
    plain, g_plain = losses_and_grads(model, cfg, batch, amp=False)
    fast, g_fast = losses_and_grads(model, cfg, batch, amp=True)
    hook.remove()
    assert dtypes == [torch.float32, torch.bfloat16]  # the autocast path really ran in bfloat16
    for k in plain:
        assert fast[k] == pytest.approx(plain[k], rel=0.02), k
    assert torch.nn.functional.cosine_similarity(g_plain, g_fast, dim=0).item() > 0.95
    assert relative_error(g_fast, g_plain) < 0.35


def test_channels_last_gives_the_same_losses_and_gradients():
    cfg = preset("smoke", **CFG)
    plain_model = fresh_model(cfg)
    fast_model = copy.deepcopy(plain_model).to(memory_format=torch.channels_last)
    fast_cfg = cfg.replace(channels_last=True)
    batch = make_batch()
    layouts = []
    hook = fast_model.visual.backbone.register_forward_hook(
        lambda m, i, o: layouts.append(o[-1].is_contiguous(memory_format=torch.channels_last)))
    plain, g_plain = losses_and_grads(plain_model, cfg, batch)
    fast, g_fast = losses_and_grads(fast_model, fast_cfg, batch)
    hook.remove()
    assert layouts == [True]
    for k in plain:
        assert fast[k] == pytest.approx(plain[k], rel=1e-5, abs=1e-6), k
    assert relative_error(g_fast, g_plain) < 1e-4  # float32 sums in another order


def test_compiled_forward_gives_the_same_losses_and_gradients():
    # aot_eager captures the graph and its autograd graph as inductor does, without inductor's code
    # generation, which takes minutes on a small CPU; the inductor path is checked on CUDA below
    cfg = preset("smoke", **CFG)
    model = fresh_model(cfg)
    batch = make_batch()
    plain, g_plain = losses_and_grads(model, cfg, batch)
    fast, g_fast = losses_and_grads(torch.compile(model, backend="aot_eager"), cfg, batch)
    for k in plain:
        assert fast[k] == pytest.approx(plain[k], rel=1e-6, abs=1e-7), k
    assert relative_error(g_fast, g_plain) < 1e-5


def test_similarity_einsum_runs_once_per_step(monkeypatch):
    cfg = preset("smoke", **CFG)
    model = fresh_model(cfg)
    batch = make_batch()
    calls = []
    einsum = torch.einsum
    monkeypatch.setattr(torch, "einsum", lambda *a, **k: calls.append(a[0]) or einsum(*a, **k))
    terms = batch_terms(model, batch, cfg, cfg.build_method(), CPU)
    assert calls == ["bchw,kc->bkhw"]
    monkeypatch.undo()
    # and the terms equal those of the stand-alone losses on the same embeddings
    with torch.no_grad():
        img, aud = model(normalise_images(batch["image"]), batch["spec"])
        expected = loss_terms(img, aud, tau=cfg.tau, **cfg.options.to_dict())
    for k, v in expected.items():
        assert terms[k].item() == pytest.approx(v.item(), rel=1e-6), k


def test_uint8_batches_are_normalised_like_torchvision():
    images = make_batch(4, size=16)["image"]
    reference = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    torch.testing.assert_close(normalise_images(images), reference(images), rtol=1e-6, atol=1e-6)


class MapStyle(torch.utils.data.Dataset):
    """A plain map-style dataset (no ``.batch``): training goes through the DataLoader."""

    def __init__(self, n: int = 24):
        self.values = torch.arange(n, dtype=torch.float32)

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, i: int) -> dict:
        return {"value": self.values[i], "index": i}


def test_persistent_workers_see_each_epochs_batches():
    data = MapStyle()
    plain_cfg = preset("smoke", batch_size=6)
    fast_cfg = plain_cfg.replace(num_workers=1, persistent_workers=True)
    plain_sampler = batch_sampler(plain_cfg, torch.zeros(len(data)), 0)
    fast_sampler = batch_sampler(fast_cfg, torch.zeros(len(data)), 0)
    plain_loader = train_loader(data, plain_sampler, plain_cfg, CPU)
    fast_loader = train_loader(data, fast_sampler, fast_cfg, CPU)
    assert fast_loader.persistent_workers and not plain_loader.persistent_workers
    seen = []
    for epoch in range(3):
        plain_sampler.set_epoch(epoch)
        fast_sampler.set_epoch(epoch)
        plain = [b["index"].tolist() for b in plain_loader]
        fast = [b["index"].tolist() for b in fast_loader]
        assert fast == plain == list(plain_sampler)
        seen.append(fast)
    assert seen[0] != seen[1]  # the epochs differ, and the persistent workers follow


# -- evaluation on the device ----------------------------------------------------------------------------


def naive_box_union(boxes, size: int = 224) -> torch.Tensor:
    """Pixel by pixel: which pixels of the image lie in some (already in-image) box."""
    out = torch.zeros(size, size, dtype=torch.bool)
    for x0, y0, x1, y1 in boxes:
        for y in range(size):
            for x in range(size):
                if x0 <= x < x1 and y0 <= y < y1:
                    out[y, x] = True
    return out


def _random_boxes(rng, n, k_max):
    """Integer boxes [n, k_max, 4] with a random number of real boxes per sample, zero rows as padding."""
    boxes = np.zeros((n, k_max, 4), dtype=np.int64)
    counts = rng.integers(1, k_max + 1, size=n)
    for i in range(n):
        for j in range(counts[i]):
            x0, y0 = rng.integers(0, 224, size=2)
            boxes[i, j] = (x0, y0, rng.integers(x0, 225), rng.integers(y0, 225))
    return boxes, counts


@pytest.mark.parametrize("mode", ["vggss", "flickr"])
def test_gt_maps_from_boxes_equal_the_per_sample_maps(mode):
    rng = np.random.default_rng(0)
    boxes, counts = _random_boxes(rng, 20, 4)
    boxes[:2] = 0
    boxes[0, 0] = (0, 0, 224, 224)  # whole image
    boxes[1, :2] = [(10, 10, 10, 50), (5, 5, 6, 6)]  # empty and one-pixel boxes
    counts[:2] = (1, 2)
    got = metrics.gt_maps_from_boxes(torch.from_numpy(boxes), mode=mode)
    assert got.dtype == torch.float64
    for i in range(len(boxes)):
        expected = metrics.gt_map(boxes[i, : counts[i]].tolist(), mode=mode)
        assert torch.equal(got[i], expected), i
    # partly outside: the inside part, as the per-sample map draws it (never wrapped around)
    outside = torch.tensor([[[-40, 20, 100, 120], [200, -5, 300, 30]], [[-10, -10, -1, 5], [0, 0, 0, 0]]])
    got = metrics.gt_maps_from_boxes(outside, mode=mode)
    for i in range(2):
        assert torch.equal(got[i], metrics.gt_map(outside[i].tolist(), mode=mode)), i
    assert torch.equal(got[0] > 0, naive_box_union([(0, 20, 100, 120), (200, 0, 224, 30)]))
    assert got[1].sum() == 0


def test_vggss_boxes_on_the_device_match_the_published_conversion(vggss_annotations):
    k_max = max(len(e["bbox"]) for e in vggss_annotations)
    norm = torch.zeros(len(vggss_annotations), k_max, 4, dtype=torch.float64)
    for i, e in enumerate(vggss_annotations):
        norm[i, : len(e["bbox"])] = torch.tensor(e["bbox"], dtype=torch.float64)
    pixels = metrics.vggss_boxes_to_pixels(norm)
    for i, e in enumerate(vggss_annotations):
        for j, box in enumerate(e["bbox"]):
            assert tuple(pixels[i, j].tolist()) == metrics.vggss_box_to_pixels(box)
    some = list(range(0, len(vggss_annotations), 20))  # the maps themselves, for a twentieth of the set
    maps = metrics.gt_maps_from_boxes(pixels[some])
    for m, i in zip(maps, some):
        boxes = [metrics.vggss_box_to_pixels(b) for b in vggss_annotations[i]["bbox"]]
        assert torch.equal(m, metrics.gt_map(boxes)), vggss_annotations[i]["file"]


class BoxedSet:
    """In-memory evaluation data whose ground truth comes as pixel boxes (or, for comparison, dense maps)."""

    def __init__(self, n: int, dense: bool, nan_at: int | None = None):
        batch = make_batch(n, seed=3)
        self.images, self.specs = batch["image"], batch["spec"]
        if nan_at is not None:
            self.specs[nan_at] = float("nan")
        self.boxes, self.counts = _random_boxes(np.random.default_rng(4), n, 3)
        self.dense, self.gt_mode = dense, "flickr"

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, idx) -> dict:
        out = {"image": self.images[idx], "spec": self.specs[idx], "id": [f"s{i}" for i in idx]}
        if self.dense:
            out["gt"] = torch.stack([metrics.gt_map(self.boxes[i, : self.counts[i]].tolist(), mode="flickr")
                                     for i in idx])
        else:
            out["gt_boxes"] = torch.from_numpy(self.boxes[idx])
        return out


def test_batched_evaluation_from_boxes_equals_dense_and_per_sample_scores():
    cfg = preset("smoke", **CFG)
    model = fresh_model(cfg)
    boxed = evaluate_model(model, BoxedSet(13, dense=False), batch_size=5, keep_maps=True, reference_maps=False,
                           progress=False)
    dense = evaluate_model(model, BoxedSet(13, dense=True), batch_size=4, reference_maps=False, progress=False)
    assert torch.equal(boxed.cious, dense.cious) and boxed.ids == dense.ids
    data = BoxedSet(13, dense=True)
    for i in range(13):
        gt = data.batch([i])["gt"][0].numpy()
        assert boxed.cious[i].item() == pytest.approx(naive_ciou(boxed.maps[i], gt), abs=1e-12)


def test_non_finite_maps_are_reported_once_with_their_ids():
    cfg = preset("smoke", **CFG)
    with pytest.raises(ValueError, match=r"non-finite .* 1 samples \(first ids: s7\)"):
        evaluate_model(fresh_model(cfg), BoxedSet(10, dense=False, nan_at=7), batch_size=4, reference_maps=False,
                       progress=False)


@pytest.mark.cuda
@needs_cuda
def test_cuda_paths_match_the_cpu():
    cfg = preset("smoke", **CFG)
    model = fresh_model(cfg)
    cpu = evaluate_model(model, BoxedSet(13, dense=False), batch_size=5, keep_maps=True, reference_maps=False,
                         progress=False)
    model = model.cuda()
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        exact = evaluate_model(model, BoxedSet(13, dense=False), batch_size=5, keep_maps=True, reference_maps=False,
                               progress=False, device="cuda")
    gpu = evaluate_model(model, BoxedSet(13, dense=False), batch_size=5, keep_maps=True, reference_maps=False,
                         progress=False, device="cuda")
    scale = float(np.abs(cpu.maps).max())
    np.testing.assert_allclose(exact.maps, cpu.maps, rtol=0, atol=1e-5 * scale)
    # By default cuDNN convolutions run in TF32 (torch.backends.cudnn.allow_tf32), 10 mantissa bits: the maps
    # agree to about 1e-3 of their scale, and a pixel that crosses the median threshold moves a cIoU by about
    # 1e-4 (on an H200, 5 of these 13 scores moved, by at most 1.8e-4). The scores computed on the device are
    # checked against a float32 numpy evaluator applied to the device's own maps.
    np.testing.assert_allclose(gpu.maps, cpu.maps, rtol=0, atol=1e-2 * scale)
    data = BoxedSet(13, dense=True)
    for i in range(13):
        gt = data.batch([i])["gt"][0].numpy()
        assert gpu.cious[i].item() == pytest.approx(naive_ciou(gpu.maps[i], gt), abs=1e-6), i
        assert exact.cious[i].item() == pytest.approx(naive_ciou(exact.maps[i], gt), abs=1e-6), i
    cfg = cfg.replace(visual_dropout=0.0)
    model = fresh_model(cfg).cuda().train()
    plain, g_plain = losses_and_grads(model, cfg, make_batch(), device=torch.device("cuda"), amp=False)
    fast, g_fast = losses_and_grads(torch.compile(model), cfg, make_batch(), device=torch.device("cuda"), amp=True)
    for k in plain:
        assert fast[k] == pytest.approx(plain[k], rel=0.02), k
    assert torch.nn.functional.cosine_similarity(g_plain, g_fast, dim=0).item() > 0.95
