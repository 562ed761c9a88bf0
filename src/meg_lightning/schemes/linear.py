"""The optimal linear analog code (``linear``, Lee & Petersen 1976): the reference a learned codec
must beat (:class:`meg_lightning.codecs.LinearCode`: KLT to k = round(fc |z|) components, MMSE
power loading, LMMSE receiver), fitted on the training latents."""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor

from meg_lightning.metrics.flops import linear_decode_gflops, linear_encode_gflops
from meg_lightning.schemes.base import SCHEMES, LatentTransmission, design_link

POWERS = ("average", "seed")


@SCHEMES.register("linear")
class LinearScheme(LatentTransmission):
    """``linear``: the optimal linear analog code over the cell's channel.

    The code meets the average power constraint itself, so by default (``eval.linear_power=
    average``) it is sent over a copy of the cell's channel *without* per-sample normalisation;
    ``seed`` normalises each seed to unit power as every other scheme's channel does (on test
    latents with more variance than the training ones the average-power code spends more than the
    budget). Always with zero-forcing (its LMMSE receiver follows the ZF equaliser, and uses the
    de-normalised noise variance), whatever ``channel.equalizer`` says.
    """

    order = 40
    hue = "tab:green"
    uses_fc = True
    analog = True
    reference_code = True
    summary = ("the optimal linear analog code (KLT, MMSE power loading, LMMSE) fitted on this "
               "run's training latents")

    def __init__(self, code, decode_image: Callable[[Tensor], Tensor], fc: Optional[float] = None,
                 power: str = "average"):
        if power not in POWERS:
            raise ValueError(f"power must be average or seed, got {power!r}")
        self.code, self.decode_image, self.fc, self.power = code, decode_image, fc, power

    @classmethod
    def build(cls, ctx, fc):
        return cls(ctx.linear_code(fc), ctx.decode_image, fc=fc, power=ctx.cfg.eval.linear_power)

    def compute(self, parts):
        shape = self.code.latent_shape
        return (0.0, linear_decode_gflops(self.code, int(self.code.k)) + parts.vae_decode,
                parts.generation + linear_encode_gflops(self.code, shape))

    @torch.no_grad()
    def transmit(self, z, *, channel, generator):
        self.code.channel, snr = design_link(channel, normalize=self.power == "seed")
        z_hat = self.code(z, snr_db=snr, generator=generator)["z_hat"].reshape(z.shape)
        return z_hat, self.code.k
