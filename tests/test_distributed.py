"""Data-parallel training on CPU (gloo): global negatives, gradient scaling, sharded samplers, torchrun.

Two processes each hold half of a batch; gathered with ``all_gather_with_grad`` they must compute what
one process computes on the whole batch: the same losses, input gradients that DDP's averaging turns
into the single-process ones, and the same parameters after a DDP training step.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fnac_lab import distributed
from fnac_lab.config import preset
from fnac_lab.checkpoint import build_model
from fnac_lab.data.sampling import ShuffledBatchSampler
from fnac_lab.datasets import build_datasets
from fnac_lab.methods import build_method
from fnac_lab.methods import weighted_total
from fnac_lab.train import batch_terms


def loss_terms(img, aud, labels=None, **settings):
    """The four terms of the ``fnac`` method built with ``settings`` (its options, and ``tau``)."""
    tau = settings.pop("tau", 0.03)
    return build_method("fnac", settings, tau=tau).terms(img, aud, labels=labels)


WORLD = 2
B = 8  # global batch
LOSS_SETTINGS = [dict(tne_threshold=0.6, distance="l1"), dict(tne_threshold=None, distance="l2"),
                 dict(tne_threshold=0.5, distance="smooth_l1", detach_targets=True)]
STEP_CFG = dict(visual_stage=2, audio_stage=2, embed_dim=16, image_size=32, audio_augment=False, batch_size=B,
                warmup_epochs=0)
LR = 0.5


def embeddings(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A global batch of channel-normalised maps [B, 16, 3, 3] and embeddings [B, 16] in float64."""
    g = torch.Generator().manual_seed(seed)
    img = torch.nn.functional.normalize(torch.randn(B, 16, 3, 3, generator=g, dtype=torch.float64), dim=1)
    aud = torch.nn.functional.normalize(torch.randn(B, 16, generator=g, dtype=torch.float64), dim=1)
    return img, aud


def model_batch(seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.randint(0, 256, (B, 3, 32, 32), dtype=torch.uint8, generator=g),
            "spec": torch.randn(B, 1, 32, 24, generator=g)}


def step_model(cfg):
    torch.manual_seed(0)
    return build_model(cfg).eval()  # batch norm on running statistics, dropout off: no per-rank statistics


def one_step(model, forward, batch, cfg) -> dict[str, torch.Tensor]:
    """One SGD step (plain SGD: a wrong gradient scale shows in the update); returns the parameter updates."""
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    terms = batch_terms(forward, batch, cfg, cfg.build_method(), torch.device("cpu"))
    optimizer.zero_grad()
    weighted_total(terms, cfg.build_method().weights(0)).backward()
    optimizer.step()
    return {k: v.detach() - before[k] for k, v in model.named_parameters()}


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        lo, hi = rank * B // WORLD, (rank + 1) * B // WORLD
        result: dict = {"rank": distributed.get_rank(), "world": distributed.get_world_size()}
        # 1. losses and input gradients through the gather
        img_full, aud_full = embeddings()
        result["losses"] = []
        for setting in LOSS_SETTINGS:
            img = img_full[lo:hi].clone().requires_grad_(True)
            aud = aud_full[lo:hi].clone().requires_grad_(True)
            terms = loss_terms(distributed.all_gather_with_grad(img), distributed.all_gather_with_grad(aud),
                                **setting)
            sum(terms.values()).backward()
            result["losses"].append(({k: v.item() for k, v in terms.items()}, img.grad, aud.grad))
        # 1b. a gradient that reaches the gather non-contiguous (the transpose of a matrix)
        x = torch.arange(B * 3, dtype=torch.float64).view(B, 3)[lo:hi].clone().requires_grad_(True)
        weight = torch.linspace(-1, 1, 3 * B, dtype=torch.float64).view(3, B)
        (distributed.all_gather_with_grad(x) * weight.t()).sum().backward()
        result["transposed_grad"] = x.grad
        # 2. one DDP training step on this rank's half of the batch, with and without global negatives
        batch = {k: v[lo:hi] for k, v in model_batch().items()}
        result["updates"] = {}
        for global_negatives in (True, False):
            cfg = preset("smoke", **STEP_CFG, global_negatives=global_negatives)
            model = step_model(cfg)
            forward = distributed.wrap_model(model, torch.device("cpu"))
            result["updates"][global_negatives] = one_step(model, forward, batch, cfg)
        # 3. small collectives used by the training loop
        result["mean"] = distributed.all_reduce_mean(torch.tensor([float(rank)]))
        result["broadcast"] = distributed.broadcast_object({"from": rank})
        torch.save(result, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(str(out / "rendezvous"), str(out)), nprocs=WORLD, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


@pytest.mark.parametrize("k", range(len(LOSS_SETTINGS)))
def test_gathered_losses_and_input_gradients_match_one_process(ranks, k):
    img, aud = embeddings()
    img.requires_grad_(True)
    aud.requires_grad_(True)
    terms = loss_terms(img, aud, **LOSS_SETTINGS[k])
    sum(terms.values()).backward()
    for rank, result in enumerate(ranks):
        assert (result["rank"], result["world"]) == (rank, WORLD)
        losses, img_grad, aud_grad = result["losses"][k]
        for name, value in terms.items():
            assert losses[name] == pytest.approx(value.item(), rel=1e-12, abs=1e-15), name
        # every rank computes the same global loss, and the gather's backward sums the gradients of all
        # ranks: each rank's slice receives WORLD x the single-process gradient, which DDP's mean undoes
        lo, hi = rank * B // WORLD, (rank + 1) * B // WORLD
        torch.testing.assert_close(img_grad / WORLD, img.grad[lo:hi], rtol=1e-10, atol=1e-14)
        torch.testing.assert_close(aud_grad / WORLD, aud.grad[lo:hi], rtol=1e-10, atol=1e-14)


def test_gather_gradient_is_the_sum_over_ranks_for_any_layout(ranks):
    weight = torch.linspace(-1, 1, 3 * B, dtype=torch.float64).view(3, B)
    for rank, result in enumerate(ranks):
        lo, hi = rank * B // WORLD, (rank + 1) * B // WORLD
        torch.testing.assert_close(result["transposed_grad"], WORLD * weight.t()[lo:hi], rtol=0, atol=0)


def test_ddp_step_with_global_negatives_equals_one_process_step(ranks):
    cfg = preset("smoke", **STEP_CFG)
    model = step_model(cfg)
    expected = one_step(model, model, model_batch(), cfg)
    assert max(v.abs().max().item() for v in expected.values()) > 1e-3  # the step moves the parameters
    for result in ranks:
        got = result["updates"][True]
        for name, delta in expected.items():
            torch.testing.assert_close(got[name], delta, rtol=2e-4, atol=2e-6, msg=name)
    # per-rank negatives (the published multi-GPU setting) are a different objective: the test can tell
    local = ranks[0]["updates"][False]
    assert max((local[n] - expected[n]).abs().max().item() for n in expected) > 1e-3


def test_collectives_and_single_process_identity(ranks):
    for result in ranks:
        assert result["mean"].item() == pytest.approx(sum(range(WORLD)) / WORLD)
        assert result["broadcast"] == {"from": 0}
    x = torch.randn(3, 2)
    assert distributed.all_gather_with_grad(x) is x
    assert distributed.get_world_size() == 1 and distributed.is_main_process()


def test_torchrun_smoke_training_writes_each_epoch_once(tmp_path):
    sets = dict(n_train=64, n_val=32, n_test=32, batch_size=16, embed_dim=32, epochs=2, warmup_epochs=1)
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(WORLD),
            "-m", "fnac_lab", "train", "--preset", "smoke", "--out", str(tmp_path), "--quiet"]
    for k, v in sets.items():
        args += ["--set", f"{k}={v}"]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("best epoch") == 1  # rank 0 alone reports
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    cfg = preset("smoke", **sets)
    train_labels = np.asarray(build_datasets(cfg)["train"].labels)
    for r in records:
        assert all(np.isfinite(r[k]) for k in ("ap50", "nce", "fns_audio", "fns_visual", "tne", "loss"))
        # the FN ratio is that of the global batches the loss saw (both ranks' slices together)
        sampler = ShuffledBatchSampler(cfg.n_train, cfg.batch_size, seed=cfg.seed)
        sampler.set_epoch(r["epoch"] - 1)
        naive = [sum(Counter(train_labels[b].tolist())[x] >= 2 for x in train_labels[b]) / len(b) for b in sampler]
        assert r["fn_ratio"] == pytest.approx(np.mean(naive), abs=1e-12)
    assert (tmp_path / "checkpoints" / "last.pt").is_file() and (tmp_path / "checkpoints" / "best.pt").is_file()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["epochs_trained"] == 2 and summary["test"]["n_samples"] == 32
    # rank 0 alone writes the event files: one file, each scalar once per epoch
    assert len(list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))) == 1
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("loss/loss")] == [1, 2]
