"""The README's picture: three test clips of the built-in data as the `demo` preset generates them (48 px frames,
the sounding object's box and its silent distractors), beside two of the reference maps every evaluation scores,
the centre prior and the ground-truth-derived oracle, with the cIoU each gets.

    .venv/bin/python docs/scripts/readme_figure.py [OUT.png]    # default: docs/images/builtin-samples.png
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

from fnac_lab.config import preset  # noqa: E402
from fnac_lab.data.builtin import BuiltinAVDataset, BuiltinSpec  # noqa: E402
from fnac_lab.metrics import ciou  # noqa: E402
from fnac_lab.scoring import centre_prior, oracle_maps  # noqa: E402
from fnac_lab.viz.static import localisation_grid  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "images" / "builtin-samples.png"
#: Test clips of the demo's data shown, by position in the split.
SAMPLES = [0, 1, 2]


def main(out: Path = OUT) -> Path:
    """Draw the figure into ``out`` (a PNG) and return its path."""
    cfg = preset("demo")
    spec = BuiltinSpec(n_classes=cfg.n_classes, image_size=cfg.image_size)
    test = BuiltinAVDataset("test", cfg.n_test, seed=cfg.data_seed, spec=spec)
    batch = test.batch(SAMPLES)
    gt = test.gt_maps(SAMPLES)
    maps = {"centre prior": centre_prior().expand(len(SAMPLES), -1, -1), "oracle": oracle_maps(gt)}
    cious = {name: ciou(m, gt) for name, m in maps.items()}
    names = [test.class_name(int(c)) for c in batch["label"]]
    fig = localisation_grid(batch["image"], maps, boxes=batch["box"], distractor_boxes=batch["distractor_boxes"],
                            cious=cious, row_titles=[f"sounding: {n}" for n in names], panel_inches=1.8,
                            title="Built-in test clips (demo preset) and two reference maps")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100, metadata={"Software": None})
    return out


if __name__ == "__main__":
    print(main(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT))
