"""fnac-lab: a workbench for audio-visual sound-source localisation with False Negative Aware
Contrastive learning (FNAC, CVPR 2023).

The names below are exported lazily (PEP 562): ``import fnac_lab.losses`` or ``import fnac_lab.metrics`` loads
neither the models nor timm; ``fnac_lab.create_model`` imports :mod:`fnac_lab.models` when first used.
"""

from __future__ import annotations

import importlib
from typing import Any

#: Exported name -> the submodule that defines it.
_EXPORTS = {"TrainConfig": "config", "preset": "config", "build_method": "methods", "ciou": "metrics",
            "gt_map": "metrics", "summarise": "metrics", "create_model": "models"}

__all__ = list(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'fnac_lab' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
