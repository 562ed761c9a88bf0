"""Rayleigh block fading: ``y_b = h_b sqrt(p_b) x_b + n_b``, ``h_b ~ CN(0, 1)`` (paper eq. 28)."""

from __future__ import annotations

import math
from typing import Optional

import torch

from meg_lightning.channels.base import CHANNELS, Channel, _like, randn


@CHANNELS.register("rayleigh")
class RayleighBlock(Channel):
    """Rayleigh block fading: the complex symbols are cut into ``num_blocks`` equal consecutive
    blocks; block b sees ``h_b ~ CN(0, 1)`` (``E|h_b|^2 = 1``), independent across blocks and
    samples, as ``sionna.phy.channel.RayleighBlockFading``. The receiver has perfect CSI."""

    fading = True
    order = 1

    def draw_gains(self, batch: int, n_c: int, generator: Optional[torch.Generator] = None,
                   like: Optional[torch.Tensor] = None) -> torch.Tensor:
        # h_b ~ CN(0, 1): real and imaginary parts N(0, 1/2), so E|h|^2 = 1 (as sionna).
        g = randn((batch, self.groups(n_c), 2), generator, _like(like)) * math.sqrt(0.5)
        return torch.complex(g[..., 0], g[..., 1])  # (B, num_blocks)

    def draw_power_gains(self, batch: int, n_c: int, generator: Optional[torch.Generator] = None,
                         dtype: torch.dtype = torch.float64) -> torch.Tensor:
        # |h_b|^2 of h_b ~ CN(0, 1) is Exp(1): drawn directly, where the generator lives
        device = generator.device if generator is not None else torch.device("cpu")
        g = torch.empty(batch, self.groups(n_c), dtype=dtype, device=device)
        return g.exponential_(1.0, generator=generator).cpu()
