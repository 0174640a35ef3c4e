"""docs/adding-a-method.md cannot go stale: the method file written on that page is registered as written, passes
the checks of the contract test, and trains for one smoke epoch beside the built-in methods."""

from __future__ import annotations

import importlib.util
import math
import re
import sys
from pathlib import Path

import pytest
import torch

from fnac_lab.cli import parse_overrides
from fnac_lab.config import ConfigError, preset
from fnac_lab.methods import METHODS, build_method
from fnac_lab.train import train

PAGE = Path(__file__).resolve().parents[1] / "docs" / "adding-a-method.md"
TINY = dict(n_train=32, n_val=16, n_test=16, batch_size=16, eval_batch_size=16, epochs=1)


@pytest.fixture
def dcl(tmp_path):
    """The page's method file, saved as ``dcl.py`` and imported; unregistered afterwards."""
    blocks = re.findall(r"```python\n(.*?)```", PAGE.read_text(), flags=re.S)
    assert len(blocks) == 1, "the page holds one method file"
    path = tmp_path / "dcl.py"
    path.write_text(blocks[0])
    spec = importlib.util.spec_from_file_location("walkthrough_dcl", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        assert "dcl" in METHODS
        yield module
    finally:
        METHODS.pop("dcl", None)
        sys.modules.pop(spec.name, None)


def naive_decoupled(logits: list[list[float]]) -> float:
    """Both directions of decoupled NCE, in float64, one pair at a time."""
    b = len(logits)
    rows = [-logits[i][i] + math.log(sum(math.exp(logits[i][k]) for k in range(b) if k != i)) for i in range(b)]
    cols = [-logits[i][i] + math.log(sum(math.exp(logits[k][i]) for k in range(b) if k != i)) for i in range(b)]
    return sum(rows) / b + sum(cols) / b


def test_the_walkthrough_method_registers_checks_its_options_and_trains(dcl, tmp_path):
    # Its equation, against a loop over the batch.
    g = torch.Generator().manual_seed(0)
    img = torch.nn.functional.normalize(torch.randn(6, 8, 3, 3, generator=g, dtype=torch.float64), dim=1)
    aud = torch.nn.functional.normalize(torch.randn(6, 8, generator=g, dtype=torch.float64), dim=1)
    logits = [[max(float(img[i, :, y, x] @ aud[k]) / 0.1 for y in range(3) for x in range(3)) for k in range(6)]
              for i in range(6)]
    got = build_method("dcl", None, tau=0.1).terms(img, aud)["dcl"]
    assert float(got) == pytest.approx(naive_decoupled(logits), rel=1e-10)

    # Its options are settings like any other: converted from text, checked in one line.
    assert preset("smoke", **parse_overrides(["method=dcl", "dcl.symmetric=false"])).options.symmetric is False
    with pytest.raises(ConfigError, match=r"^dcl\.weight=-1\.0: must be positive$"):
        preset("smoke", method="dcl", **{"dcl.weight": -1})
    with pytest.raises(ConfigError, match="dcl.weigth"):
        preset("smoke", method="dcl", **{"dcl.weigth": 1})

    # One smoke epoch, its term recorded; the record names the method and its options.
    run = train(preset("smoke", method="dcl", **TINY), tmp_path / "dcl", progress=False)
    assert math.isfinite(run.history[0]["dcl"]) and run.history[0]["loss"] == pytest.approx(run.history[0]["dcl"])
    assert (tmp_path / "dcl" / "checkpoints" / "best.pt").is_file()
    assert '"method": "dcl"' in (tmp_path / "dcl" / "config.json").read_text()
