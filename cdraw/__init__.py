"""cdraw: DRAW and alignDRAW image generation in PyTorch.

The core (attention, model, likelihoods, conditioning) imports only torch and safetensors; training, data and
the command line live in their own modules on top of it. ``import cdraw`` itself imports none of them: the
names below load their module when first used (so ``cdraw --help`` answers without loading torch).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from cdraw.errors import CDrawError, CDrawWarning

if TYPE_CHECKING:
    from cdraw.conditioning import ConditionConfig, Context
    from cdraw.model import DRAW, DRAWConfig, DRAWOutput, Trace

__version__ = "0.1.0"
#: Public names and the module each lives in, imported on first use (PEP 562).
_LAZY = {
    "ConditionConfig": "cdraw.conditioning",
    "Context": "cdraw.conditioning",
    "DRAW": "cdraw.model",
    "DRAWConfig": "cdraw.model",
    "DRAWOutput": "cdraw.model",
    "Trace": "cdraw.model",
}
__all__ = [
    "DRAW",
    "CDrawError",
    "CDrawWarning",
    "ConditionConfig",
    "Context",
    "DRAWConfig",
    "DRAWOutput",
    "Trace",
    "__version__",
]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'cdraw' has no attribute {name!r}")
    try:
        module = importlib.import_module(_LAZY[name])
    except AttributeError as e:  # Python would report it as "cannot import name", dropping the cause
        raise ImportError(f"importing {_LAZY[name]} for cdraw.{name} failed: {e}") from e
    return getattr(module, name)


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
