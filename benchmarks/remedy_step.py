"""What each false-negative remedy adds to a training step, against NCE, side by side in one run.

Every method trains the same model (the demo preset's streams, randomly initialised) on the same built-in batch
with Adam, one full step each (forward, the method's terms at the weights of an epoch after its warm-up, backward,
optimiser step); the methods take turns within each repeat, and the figure is the median step time over repeats.
A remedy reports ``nce`` beside its own term, so its step computes both: what is timed is what training runs.

    python benchmarks/remedy_step.py                  # B 128 on the CPU, 1 thread
    python benchmarks/remedy_step.py --threads 2 --repeats 9
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from fnac_lab.checkpoint import build_model
from fnac_lab.config import preset
from fnac_lab.datasets import build_datasets
from fnac_lab.methods import BASELINE, METHODS, weighted_total
from fnac_lab.train import batch_terms

from machine import describe_machine

#: NCE first: every ratio is against it.
ORDER = [BASELINE, *sorted(m for m in METHODS if m not in (BASELINE, "fnac")), "fnac"]


class Step:
    """One method's training step on its own copy of the model (the same initial weights for every method)."""

    def __init__(self, name: str, batch: dict, *, batch_size: int, state: dict):
        self.cfg = preset("demo", method=name, visual_pretrain=None, batch_size=batch_size)
        self.method = self.cfg.build_method()
        self.epoch = self.method.warmup_epochs  # the first epoch with the method's own terms
        self.model = build_model(self.cfg, progress=False)
        self.model.load_state_dict(state)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.cfg.lr)
        self.batch = batch

    def __call__(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        terms = batch_terms(self.model, self.batch, self.cfg, self.method, torch.device("cpu"))
        weighted_total(terms, self.method.weights(self.epoch)).backward()
        self.optimizer.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=2, help="steps per method per repeat")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    base = preset("demo", visual_pretrain=None, batch_size=args.batch, n_train=args.batch, n_val=8, n_test=8)
    train_set = build_datasets(base)["train"]
    batch = torch.utils.data.default_collate([train_set[i] for i in range(args.batch)])
    state = build_model(base, progress=False).state_dict()
    steps = {name: Step(name, batch, batch_size=args.batch, state=state) for name in ORDER}
    for step in steps.values():  # warm-up call, not timed
        step()
    times = {name: [] for name in ORDER}
    for _ in range(args.repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                step()
            times[name].append((time.perf_counter() - start) / args.steps)

    print(f"{describe_machine(torch.device('cpu'))}; B = {args.batch}, "
          f"{base.image_size} px, demo streams; median of {args.repeats} repeats x {args.steps} steps")
    print("| method | ms / step | vs NCE |")
    print("| --- | ---: | ---: |")
    nce = statistics.median(times[BASELINE])
    for name in ORDER:
        median = statistics.median(times[name])
        print(f"| {METHODS[name].label} | {1000 * median:.0f} | {median / nce:.3f}x |")


if __name__ == "__main__":
    main()
