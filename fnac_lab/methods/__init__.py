"""Training methods, one file each, registered by name: ``METHODS[cfg.method]`` with that method's options.

``nce`` (EZ-VSL, the baseline), ``fnac`` (Sun et al., CVPR 2023), and the label-free false-negative remedies that
share :mod:`~fnac_lab.methods.remedy`: ``fn_elimination``, ``fn_attraction``, ``debiased_nce``, ``hard_negative_nce``,
with ``supcon_oracle`` as their upper bound with the class labels. Every module of this package is imported here,
so adding a method is one file: a :class:`~fnac_lab.methods.base.MethodOptions` dataclass and a
:class:`~fnac_lab.methods.base.Method` subclass under :func:`~fnac_lab.methods.base.register_method`
(docs/adding-a-method.md).
"""

import importlib
import pkgutil

from .base import (BASELINE, BASELINE_LABEL, METHODS, Method, MethodOptions, build_method,  # noqa: F401
                   method_class, register_method, UNTRAINED, weighted_total)

#: Modules of this package that hold no method.
_SUPPORT = {"base", "remedy", "settings"}
for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _module not in _SUPPORT:
        importlib.import_module(f"{__name__}.{_module}")
