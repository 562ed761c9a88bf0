"""A small dense codec for tiny latents (``codec.arch=mlp``)."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from meg_lightning.codecs.base import (
    ARCHS,
    CodecArch,
    CompressionEncoder,
    HiddenSettings,
    check_code,
    check_code_input,
)


class MLPDecoder(nn.Module):
    """z_hat = W_s x_hat + W_2 ReLU(W_1 x_hat + b_1) + b_2: a linear skip path (so the optimal
    linear decoder is one step away) plus one hidden ReLU layer of width ``hidden``. For tiny
    latents, where the paper's per-sample LayerNorm over a few dozen entries is too restrictive."""

    def __init__(self, latent_shape: Sequence[int], k: int, hidden: int):
        super().__init__()
        self.latent_shape, self.numel = check_code(latent_shape, k)
        n = self.numel
        self.k, self.hidden = k, hidden
        self.skip = nn.Linear(k, n, bias=False)
        self.fc1 = nn.Linear(k, hidden)
        self.fc2 = nn.Linear(hidden, n)
        self.unflatten = nn.Unflatten(1, self.latent_shape)

    def forward(self, x_hat: torch.Tensor) -> torch.Tensor:
        check_code_input(x_hat, self.k)
        out = self.skip(x_hat) + self.fc2(F.relu(self.fc1(x_hat)))  # (B, |z|)
        return self.unflatten(out)  # (B, C, h, w)


@ARCHS.register("mlp")
class MLP(CodecArch):
    """C_w = Flatten + Linear(|z|, k); C_psi^{-1} = :class:`MLPDecoder`."""

    Settings = HiddenSettings
    order = 1

    @classmethod
    def build(cls, latent_shape, k, settings):
        n = check_code(latent_shape, k)[1]
        return CompressionEncoder(latent_shape, k), MLPDecoder(latent_shape, k, settings.width(n))
