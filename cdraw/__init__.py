"""cdraw: DRAW and alignDRAW image generation in PyTorch.

The core (attention, model, likelihoods) imports only torch and safetensors; training, data and
the command line live in their own modules on top of it.
"""

from cdraw.errors import CDrawError
from cdraw.model import DRAW, Context, DRAWConfig, DRAWOutput, Trace

__version__ = "0.1.0"
__all__ = ["DRAW", "CDrawError", "Context", "DRAWConfig", "DRAWOutput", "Trace", "__version__"]
