"""simda_kernels: the ops behind SimDA, each with a pure PyTorch reference.

Public entry points dispatch between the fast paths and ``simda_kernels.reference``:

- ``latent_shift_attention(q, k, v, frames, height, width, layout="paper", scale=None,
  backend="auto")``
- ``fused_temporal_adapter(x, w_down, b_down, conv_w, conv_b, act="gelu", backend="auto")``
"""

from simda_kernels import reference
from simda_kernels.dispatch import fused_temporal_adapter, latent_shift_attention

__all__ = ["fused_temporal_adapter", "latent_shift_attention", "reference"]
__version__ = "0.1.0"
