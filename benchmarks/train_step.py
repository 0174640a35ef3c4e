"""Training-step throughput: this project's step against a plain fp32 eager step written the published way.

Both steps train the same two-stream model (ResNet-18 visual and audio streams, 512-d embeddings, the
FNAC objective with all four terms at weight 100, Adam) on the same batch, side by side in one run:

- ``published``: float32 batches normalised on the host and copied (pageable) each step, fp32 eager,
  every loss term recomputing the cross-modal similarity tensor (one einsum per term, plus one for the
  own-pair maps), and the loss read back to the host every step for the running average.
- ``project``: :func:`fnac_lab.train.batch_terms` (uint8 batches from pinned memory, normalised on the
  device, SpecAugment on the device, one similarity einsum for all terms, losses kept on the device), with
  the fast paths switched on one by one: channels_last, bf16 autocast (CUDA; on CPU with ``--cpu-bf16``)
  and ``torch.compile`` (with ``--compile``).

Each variant runs ``--steps`` steps per repeat, the variants taking turns within each repeat; the figure is
the median over repeats of samples per second. The share of the FNAC terms is the median time of the
similarity tensor plus the four terms, forward and backward, on embeddings of the step's shape, divided by
the median step time. Before timing, the published-style terms are checked to equal the project's.

    python benchmarks/train_step.py                       # published size on a GPU, reduced on a CPU
    python benchmarks/train_step.py --batch 128 --image-size 224 --spec 257x200 --compile
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from fnac_lab.config import TrainConfig
from fnac_lab.checkpoint import build_model
from fnac_lab.methods import build_method, weighted_total
from fnac_lab.train import batch_terms
from fnac_lab.utils import normalise_images

from machine import describe_machine

WEIGHT = 100.0  # published weight of each FNAC term


def published_style_terms(img: torch.Tensor, aud: torch.Tensor, tau: float, threshold: float) -> dict:
    """The four terms as a straightforward implementation computes them: the similarity per term."""
    target = torch.arange(img.shape[0], device=img.device)

    def logits() -> torch.Tensor:
        return (torch.einsum("nchw,mc->nmhw", img, aud) / tau).flatten(2).max(dim=2).values

    def l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a.softmax(dim=1) - b.softmax(dim=1)).abs().mean()

    nce_logits = logits()
    nce = F.cross_entropy(nce_logits, target) + F.cross_entropy(nce_logits.t(), target)
    aud_aff = aud @ aud.t() / tau
    fns_audio = l1(aud_aff, logits())
    v = img.mean(dim=(2, 3))
    fns_visual = l1(v @ v.t() / tau, logits())
    own = torch.einsum("nchw,nc->nhw", img, aud) / tau
    lo = own.flatten(1).min(dim=1).values[:, None, None]
    hi = own.flatten(1).max(dim=1).values[:, None, None]
    mask = ((own - lo) / (hi - lo + 1e-5) > threshold).float()
    f = (img * mask[:, None]).mean(dim=(2, 3))
    tne = l1(aud_aff, f @ f.t() / tau)
    return {"nce": nce, "fns_audio": fns_audio, "fns_visual": fns_visual, "tne": tne}


def bench_config(*, batch_size: int, image_size: int, **model) -> TrainConfig:
    """The benchmarked configuration: randomly initialised streams, all four terms active from the first step."""
    return TrainConfig(visual_pretrained=False, batch_size=batch_size, image_size=image_size, options={"warmup_epochs": 0},
                       **model)


def make_batch(*, batch_size: int, image_size: int, bins: int, frames: int, seed: int = 0) -> dict:
    """One training batch as the cache yields it: uint8 images and float32 spectrograms, on the host."""
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.randint(0, 256, (batch_size, 3, image_size, image_size), dtype=torch.uint8, generator=g),
            "spec": torch.randn(batch_size, 1, bins, frames, generator=g)}


@torch.no_grad()
def map_size_of(model: torch.nn.Module, batch: dict, device: torch.device) -> int:
    """Side of the visual feature map ``model`` makes of ``batch``'s images (7 at 224 px for ResNet-18)."""
    image, spec = normalise_images(batch["image"][:2]).to(device), batch["spec"][:2].to(device)
    return model(image, spec)[0].shape[-1]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PublishedStep:
    """fp32 eager, host-normalised float batches, per-term similarity, a host read of the loss per step."""

    def __init__(self, cfg: TrainConfig, device: torch.device, batch: dict):
        torch.manual_seed(0)
        self.cfg, self.device = cfg, device
        self.model = build_model(cfg).to(device).train()
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.image = normalise_images(batch["image"])  # float32 on the host, as a published loader yields it
        self.spec = batch["spec"]
        self.running = 0.0

    def __call__(self) -> None:
        image, spec = self.image.to(self.device), self.spec.to(self.device)
        img, aud = self.model(image, spec)
        terms = published_style_terms(img, aud, self.cfg.tau, self.cfg.options.tne_threshold)
        loss = terms["nce"] + WEIGHT * (terms["fns_audio"] + terms["fns_visual"] + terms["tne"])
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.running += loss.item()


class ProjectStep:
    """:func:`batch_terms` with the configuration's fast paths; the loss stays on the device."""

    def __init__(self, cfg: TrainConfig, device: torch.device, batch: dict, *, amp: bool, compile_model: bool,
                 compile_backend: str = "inductor"):
        torch.manual_seed(0)
        self.cfg, self.device, self.amp = cfg, device, amp
        self.model = build_model(cfg).to(device).train()
        if cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.forward = torch.compile(self.model, backend=compile_backend) if compile_model else self.model
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        pin = device.type == "cuda"
        self.batch = {k: v.pin_memory() if pin else v for k, v in batch.items()}
        self.running = torch.zeros((), device=device)
        self.method = cfg.build_method()

    def __call__(self) -> None:
        terms = batch_terms(self.forward, self.batch, self.cfg, self.method, self.device, amp=self.amp)
        loss = weighted_total(terms, self.method.weights(self.method.warmup_epochs))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.running += loss.detach()


def time_steps(step, steps: int, device: torch.device) -> float:
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return time.perf_counter() - t0


def terms_seconds(cfg: TrainConfig, device: torch.device, batch_size: int, map_size: int, repeats: int,
                  published: bool) -> float:
    """Median time of similarity + four terms, forward and backward, on float32 embeddings of the step's shape."""
    g = torch.Generator(device="cpu").manual_seed(0)
    img0 = F.normalize(torch.randn(batch_size, cfg.embed_dim, map_size, map_size, generator=g), dim=1).to(device)
    aud0 = F.normalize(torch.randn(batch_size, cfg.embed_dim, generator=g), dim=1).to(device)
    times = []
    for _ in range(repeats + 3):
        img, aud = img0.clone().requires_grad_(True), aud0.clone().requires_grad_(True)
        sync(device)
        t0 = time.perf_counter()
        if published:
            terms = published_style_terms(img, aud, cfg.tau, cfg.options.tne_threshold)
        else:
            terms = cfg.build_method().terms(img, aud)
        (terms["nce"] + WEIGHT * (terms["fns_audio"] + terms["fns_visual"] + terms["tne"])).backward()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times[3:])  # the first calls warm up


def check_terms_agree(cfg: TrainConfig, device: torch.device) -> None:
    g = torch.Generator().manual_seed(1)
    img = F.normalize(torch.randn(16, 32, 7, 7, generator=g, dtype=torch.float64), dim=1).to(device)
    aud = F.normalize(torch.randn(16, 32, generator=g, dtype=torch.float64), dim=1).to(device)
    ours = build_method("fnac", {"tne_threshold": cfg.options.tne_threshold}, tau=cfg.tau).terms(img, aud)
    theirs = published_style_terms(img, aud, cfg.tau, cfg.options.tne_threshold)
    for k, v in ours.items():
        torch.testing.assert_close(theirs[k], v, rtol=1e-10, atol=1e-12, msg=f"published-style {k} differs")


def main() -> None:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if cuda else "cpu")
    parser.add_argument("--batch", type=int, default=128 if cuda else 16)
    parser.add_argument("--image-size", type=int, default=224 if cuda else 112)
    parser.add_argument("--spec", default="257x200" if cuda else "128x100", help="spectrogram bins x frames")
    parser.add_argument("--steps", type=int, default=10 if cuda else 2, help="timed steps per repeat")
    parser.add_argument("--repeats", type=int, default=5 if cuda else 3)
    parser.add_argument("--compile", action="store_true", help="also time the step under torch.compile")
    parser.add_argument("--cpu-bf16", action="store_true", help="also time bf16 autocast on the CPU")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    bins, frames = (int(v) for v in args.spec.split("x"))
    cfg = bench_config(batch_size=args.batch, image_size=args.image_size)
    check_terms_agree(cfg, device)

    batch = make_batch(batch_size=args.batch, image_size=args.image_size, bins=bins, frames=frames)
    bf16 = device.type == "cuda" or args.cpu_bf16
    variants = {"published: fp32 eager, per-term similarity": PublishedStep(cfg, device, batch),
                "project: fp32 eager": ProjectStep(cfg, device, batch, amp=False, compile_model=False)}
    last = cfg.replace(channels_last=True)
    variants["project: + channels_last"] = ProjectStep(last, device, batch, amp=False, compile_model=False)
    if bf16:
        variants["project: + bf16 autocast"] = ProjectStep(last, device, batch, amp=True, compile_model=False)
    if args.compile:
        variants["project: + torch.compile"] = ProjectStep(last, device, batch, amp=bf16, compile_model=True)

    print(f"machine: {describe_machine(device)}")
    print(f"batch {args.batch}, image {args.image_size} px, spectrogram {bins} x {frames}, ResNet-18 both streams, "
          f"{args.steps} steps x {args.repeats} repeats (median)")
    for step in variants.values():  # warm-up: allocator, cudnn autotuning, compilation
        time_steps(step, 2, device)
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, step in variants.items():
            seconds[name].append(time_steps(step, args.steps, device) / args.steps)
    step_time = {name: statistics.median(v) for name, v in seconds.items()}
    base = step_time[next(iter(variants))]
    print("\n| variant | samples/s | ms / step | vs published |\n| --- | ---: | ---: | ---: |")
    for name, t in step_time.items():
        print(f"| {name} | {args.batch / t:.1f} | {1000 * t:.1f} | {base / t:.2f}x |")

    map_size = map_size_of(variants[next(iter(variants))].model, batch, device)
    fastest = min(step_time, key=step_time.get)
    repeats = max(args.repeats, 20)  # cheap: more repeats for a steadier median
    ours = terms_seconds(cfg, device, args.batch, map_size, repeats, published=False)
    theirs = terms_seconds(cfg, device, args.batch, map_size, repeats, published=True)
    print(f"\nFNAC terms (similarity + 4 terms, forward + backward, fp32, {args.batch} x {cfg.embed_dim} x "
          f"{map_size} x {map_size}):")
    print("| path | ms | share of its step |\n| --- | ---: | ---: |")
    print(f"| project, one similarity tensor | {1000 * ours:.2f} | {100 * ours / step_time[fastest]:.2f} % "
          f"(of '{fastest}') |")
    print(f"| published-style, per-term similarity | {1000 * theirs:.2f} | {100 * theirs / base:.2f} % |")
    print(f"\nfastest step vs published: {base / step_time[fastest]:.2f}x")


if __name__ == "__main__":
    main()
