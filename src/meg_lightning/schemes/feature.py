"""Paper benchmark 2 (``feature``): the raw latent z sent uncoded; the UE runs the VAE decoder."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from meg_lightning.schemes.base import SCHEMES, LatentTransmission


@SCHEMES.register("feature")
class FeatureLatentScheme(LatentTransmission):
    """The raw latent z, |z| real symbols, through the cell's channel: power-normalised per sample
    by the channel and de-normalised at the receiver, so z_hat = z + (equalised noise) * rms(z)."""

    order = 10
    hue = "tab:blue"
    analog = True
    paper_role = "latent"

    def __init__(self, decode_image: Callable[[Tensor], Tensor]):
        self.decode_image = decode_image

    @classmethod
    def build(cls, ctx, fc):
        return cls(ctx.decode_image)

    def compute(self, parts):
        return 0.0, parts.vae_decode, parts.generation

    @torch.no_grad()
    def transmit(self, z, *, channel, generator):
        x = z.flatten(1)  # (B, |z|)
        x_hat = channel(x, mode="eval", generator=generator)["x_hat"]
        return x_hat.reshape(z.shape), z[0].numel()
