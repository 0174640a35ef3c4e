"""How settings name a method's options: ``method.option`` (``fnac.w_tne``), and the one mapping from the flat names
of records written before methods had options of their own.

Earlier ``config.json`` files, checkpoints, grids and results name FNAC's options flat (``w_tne``,
``warmup_epochs``, ``nce_fn_mask``): :data:`FLAT_OPTION_KEYS` reads each as the ``fnac`` option of the same name.
Such a record is a ``fnac`` run; with its three weights at 0 it trains NCE alone, exactly as the ``nce`` method does.
"""

from __future__ import annotations

from typing import Any

from .base import METHODS
from .fnac import FnacOptions

#: FNAC's options as earlier records name them (flat): each is read as ``fnac.<name>``.
FLAT_OPTION_KEYS = {name: f"fnac.{name}" for name in FnacOptions.names()}


def dotted(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with every method option named ``method.option``: the flat names of :data:`FLAT_OPTION_KEYS` and
    a method's options given as a mapping under its name (``{"fnac": {"w_tne": 0}}``, as records hold them) are
    spelled out; every other key stays."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key in FLAT_OPTION_KEYS:
            out[FLAT_OPTION_KEYS[key]] = value
        elif key in METHODS and isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            out[key] = value
    return out


