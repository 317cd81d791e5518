"""cdraw: DRAW and alignDRAW image generation in PyTorch.

The core (attention, model, likelihoods, conditioning) imports only torch and safetensors; training, data and
the command line live in their own modules on top of it.
"""

from cdraw.conditioning import ConditionConfig, Context
from cdraw.errors import CDrawError, CDrawWarning
from cdraw.model import DRAW, DRAWConfig, DRAWOutput, Trace

__version__ = "0.1.0"
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
