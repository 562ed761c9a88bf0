"""The paper's codec (``codec.arch=paper``, Appendix A / Table III): a dense encoder and a dense
decoder with parameter-free normalisations and a residual."""

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


class ParameterFreeNorm(nn.Module):
    """Table III's ``Normalize`` rows (no parameters): per-sample zero mean and unit variance.

    The paper lists no parameters for these layers; a layer normalisation without affine is the
    parameter-free normalisation that keeps activations O(1) for the next dense layer (an L2
    normalisation would shrink them by 1/sqrt(width)).
    """

    def __init__(self, features: int, eps: float = 1e-6):
        super().__init__()
        self.features, self.eps = features, eps

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(u, (self.features,), eps=self.eps)

    def extra_repr(self) -> str:
        return f"in_features={self.features}, eps={self.eps}"


class PaperDecoder(nn.Module):
    """C_psi^{-1} (Sec. III-C2): x_hat (B, k) -> z_hat (B, C, h, w), Table III exactly
    (563,430,184 parameters with the encoder at |z| = 16384, fc = 0.5, hidden = 9000)::

        u1 = ReLU(Linear(k, |z|)(x_hat))                       "Relu(8192 -> 16384)"
        u2 = ReLU(Linear(|z|, hidden)(norm(u1)))               "Normalize", "Relu(16384 -> 9000)"
        u3 = ReLU(Linear(hidden, |z|)(norm(u2)))               "Normalize", "Relu(9000 -> 16384)"
        z_hat = Unflatten(LayerNorm(|z|, eps=1e-6)(u3 + u1))   residual, "LayerNorm(16384)"

    Output scale: the final LayerNorm makes every sample zero-mean and unit-variance over its |z|
    entries before its affine (weight, bias), which then learns the per-entry scale and offset of
    z. Latents z are the U-Net outputs (roughly unit variance for SD), so the default affine
    (1, 0) starts at the right scale; what the layout cannot express is a per-sample energy that
    differs from the per-entry profile, a limit of the paper's design that we keep.
    """

    def __init__(self, latent_shape: Sequence[int], k: int, hidden: int):
        super().__init__()
        self.latent_shape, self.numel = check_code(latent_shape, k)
        n = self.numel
        self.k, self.hidden = k, hidden
        self.fc1 = nn.Linear(k, n)
        self.norm1 = ParameterFreeNorm(n)
        self.fc2 = nn.Linear(n, hidden)
        self.norm2 = ParameterFreeNorm(hidden)
        self.fc3 = nn.Linear(hidden, n)
        self.out_norm = nn.LayerNorm(n, eps=1e-6)
        self.unflatten = nn.Unflatten(1, self.latent_shape)

    def forward(self, x_hat: torch.Tensor) -> torch.Tensor:
        check_code_input(x_hat, self.k)
        u1 = F.relu(self.fc1(x_hat))  # (B, |z|)
        u2 = F.relu(self.fc2(self.norm1(u1)))  # (B, hidden)
        u3 = F.relu(self.fc3(self.norm2(u2)))  # (B, |z|)
        out = self.out_norm(u3 + u1)  # residual from the first decoder layer
        return self.unflatten(out)  # (B, C, h, w)


@ARCHS.register("paper")
class Paper(CodecArch):
    """Appendix A / Table III: C_w = Flatten + Linear(|z|, k); C_psi^{-1} = :class:`PaperDecoder`."""

    Settings = HiddenSettings
    order = 0

    @classmethod
    def build(cls, latent_shape, k, settings):
        n = check_code(latent_shape, k)[1]
        return CompressionEncoder(latent_shape, k), PaperDecoder(latent_shape, k,
                                                                 settings.width(n))
