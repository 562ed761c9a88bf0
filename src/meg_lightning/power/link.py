"""The seed link with fading drawn BEFORE transmission: a thin adapter over the project's channel.

The power-control agent observes ``h_t`` before it picks ``p_t`` (eq. 31), so the env draws the
fading of all B blocks at reset and the link must use exactly those gains. This module sends a seed
through :class:`meg_lightning.channel.Channel` with given gains ``h`` (N, B):

- if ``Channel.forward`` accepts ``h=`` (a pre-drawn fading tensor), the Rayleigh channel is called
  with it directly;
- otherwise (the current channel API draws ``h`` itself) it calls the same layer with
  ``kind="awgn"`` and relative powers ``p_b |h_b|^2``. With perfect CSI this is exact in
  distribution for the ``zf`` and ``mmse`` equalisers: the receiver's output is
  ``c + n e^{-j arg h} / sqrt(p g)`` (zf) or its MMSE scaling, and circular noise ``n e^{-j theta}``
  is distributed as ``n``. Only ``equalizer="none"`` (which keeps the phase) cannot be emulated, so
  it is refused.

Either way the noise, pairing of real symbols into complex uses, block split, equaliser and
normalisation are the channel layer's own code, not a copy.
"""

from __future__ import annotations

import inspect
from typing import Optional

import torch
from torch import nn

from meg_lightning.channel import Channel
from meg_lightning.errors import ConfigError


def channel_accepts_h() -> bool:
    """Whether the channel layer can take pre-drawn fading (``Channel.forward(..., h=...)``)."""
    return "h" in inspect.signature(Channel.forward).parameters


class FadingLink(nn.Module):
    """``x (N, k) -> x_hat (N, k)`` over B Rayleigh blocks with known gains and relative powers.

    Args:
        num_blocks: B fading blocks (``ceil(k/2)`` complex uses must split evenly).
        snr_db: SNR of the equal allocation (relative power 1, ``E|h|^2 = 1``), dB.
        equalizer: ``zf`` | ``mmse`` (perfect CSI at the receiver).
        normalize: scale each seed to unit power before the channel (and back after).
    """

    def __init__(self, num_blocks: int, snr_db: float, equalizer: str = "mmse",
                 normalize: bool = True):
        super().__init__()
        self.direct = channel_accepts_h()
        if not self.direct and equalizer not in ("zf", "mmse"):
            raise ConfigError("ppo.equalizer", equalizer,
                              "zf or mmse (the power-control link needs a receiver with CSI)")
        self.channel = Channel(kind="rayleigh" if self.direct else "awgn", snr_db=snr_db,
                               num_blocks=num_blocks, equalizer=equalizer, normalize=normalize)

    def forward(self, x: torch.Tensor, h: torch.Tensor, power: torch.Tensor,
                generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """``x`` (N, k) real, ``h`` (N, B) complex, ``power`` (N, B) relative (ones = equal)."""
        if self.direct:
            out = self.channel(x, mode="eval", power=power, h=h, generator=generator)
        else:
            g = h.real.square() + h.imag.square()  # (N, B) |h_b|^2
            out = self.channel(x, mode="eval", power=power * g, generator=generator)
        return out["x_hat"]
