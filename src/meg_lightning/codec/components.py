"""Compression encoder C_w and decoder C_psi^{-1} (paper Sec. III-C, Appendix A / Table III).

Plain ``nn.Module``s, free of Lightning, so that the evaluation sweep and the TorchRL power-control
environment reuse exactly the modules that were trained.

Data flow (eq. 2 and the decoder of Sec. III-C2)::

    z (B, C, h, w) --Flatten--> (B, |z|) --Linear--> x (B, k)            encoder C_w
    x_hat (B, k) --> ... dense / norm / residual ... --> z_hat (B, C, h, w)   decoder C_psi^{-1}

The code length is k = round(fc * |z|) (Table II), so one seed costs k real channel symbols.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from meg_lightning.errors import ConfigError

#: Hidden width of the paper's decoder for |z| = 16384 (Table III); other sizes keep the ratio.
PAPER_HIDDEN = 9000
PAPER_NUMEL = 16384
ARCHS = ("paper", "mlp", "adaptive")


def code_length(fc: float, numel: int) -> int:
    """Seed length k = round(fc * |z|) in real symbols.

    Table II, |z| = 16384: fc 0.1/0.3/0.5/0.7/0.9 -> k 1638/4915/8192/11469/14746.

    Rounds half up (not Python's round-half-to-even) so that k does not depend on parity.
    """
    if isinstance(fc, bool) or not isinstance(fc, (int, float)) or not math.isfinite(fc) \
            or not 0 < fc <= 1:
        raise ConfigError("codec.fc", fc, "a number in (0, 1]")
    if not isinstance(numel, int) or numel <= 0:
        raise ConfigError("latent numel |z|", numel, "a positive integer")
    k = int(math.floor(fc * numel + 0.5))
    if k < 1:
        raise ConfigError("codec.fc", fc, f"a rate giving at least one symbol for |z|={numel}")
    return k


def default_hidden(numel: int) -> int:
    """Decoder hidden width: 9000 for |z| = 16384 (Table III), the same ratio otherwise."""
    return max(1, int(math.floor(PAPER_HIDDEN * numel / PAPER_NUMEL + 0.5)))


def _latent_shape(latent_shape: Sequence[int]) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in latent_shape)
    if len(shape) != 3 or any(s <= 0 for s in shape):
        raise ConfigError("latent_shape", tuple(latent_shape), "(C, h, w) with positive sizes")
    return shape  # type: ignore[return-value]


def check_code(latent_shape: Sequence[int], k: int) -> tuple[tuple[int, int, int], int]:
    """``(latent_shape, |z|)`` after checking both and that the code length k is in [1, |z|]."""
    shape = _latent_shape(latent_shape)
    numel = math.prod(shape)
    if not 0 < k <= numel:
        raise ConfigError("code length k", k, f"an integer in [1, |z|={numel}]")
    return shape, numel


def check_latents(z: torch.Tensor, latent_shape: tuple[int, ...]) -> None:
    """One-line ConfigError when ``z`` is not a batch (B, C, h, w) of the codec's latent shape."""
    if z.ndim != 4 or tuple(z.shape[1:]) != tuple(latent_shape):
        raise ConfigError("z.shape", tuple(z.shape), f"(B, {', '.join(map(str, latent_shape))}) "
                          "matching the codec's latent shape")


class CompressionEncoder(nn.Module):
    """C_w (eq. 2): Flatten + Linear(|z|, k). Output x (B, k), not yet power-normalised."""

    def __init__(self, latent_shape: Sequence[int], k: int):
        super().__init__()
        self.latent_shape, self.numel = check_code(latent_shape, k)
        self.k = k
        self.flatten = nn.Flatten()
        self.linear = nn.Linear(self.numel, k)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        check_latents(z, self.latent_shape)
        return self.linear(self.flatten(z))  # (B, k)


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


class CompressionDecoder(nn.Module):
    """C_psi^{-1} (Sec. III-C2): x_hat (B, k) -> z_hat (B, C, h, w).

    ``arch="paper"`` is Table III exactly (563,430,184 parameters with the encoder at |z| = 16384,
    fc = 0.5, hidden = 9000)::

        u1 = ReLU(Linear(k, |z|)(x_hat))                       "Relu(8192 -> 16384)"
        u2 = ReLU(Linear(|z|, hidden)(norm(u1)))               "Normalize", "Relu(16384 -> 9000)"
        u3 = ReLU(Linear(hidden, |z|)(norm(u2)))               "Normalize", "Relu(9000 -> 16384)"
        z_hat = Unflatten(LayerNorm(|z|, eps=1e-6)(u3 + u1))   residual, "LayerNorm(16384)"

    Output scale: the final LayerNorm makes every sample zero-mean and unit-variance over its |z|
    entries before its affine (weight, bias), which then learns the per-entry scale and offset of
    z. Latents z are the U-Net outputs (roughly unit variance for SD), so the default affine
    (1, 0) starts at the right scale; what the layout cannot express is a per-sample energy that
    differs from the per-entry profile, a limit of the paper's design that we keep.

    ``arch="mlp"`` (ours, for tiny latents where a per-sample LayerNorm over a few dozen entries
    is too restrictive): z_hat = W_s x_hat + W_2 ReLU(W_1 x_hat + b_1) + b_2, a linear skip path
    (so the optimal linear decoder is one step away) plus one hidden ReLU layer of width ``hidden``.
    """

    def __init__(self, latent_shape: Sequence[int], k: int, hidden: int | None = None,
                 arch: str = "paper"):
        super().__init__()
        self.latent_shape, self.numel = check_code(latent_shape, k)
        n = self.numel
        if arch not in ARCHS[:2]:
            raise ConfigError("codec.arch", arch, f"one of {', '.join(ARCHS[:2])} "
                              "(adaptive: meg_lightning.codec.adaptive.AdaptiveDecoder)")
        hidden = default_hidden(n) if hidden is None else int(hidden)
        if hidden <= 0:
            raise ConfigError("codec.hidden", hidden, "a positive integer or null")
        self.k, self.hidden, self.arch = k, hidden, arch
        if arch == "paper":
            self.fc1 = nn.Linear(k, n)
            self.norm1 = ParameterFreeNorm(n)
            self.fc2 = nn.Linear(n, hidden)
            self.norm2 = ParameterFreeNorm(hidden)
            self.fc3 = nn.Linear(hidden, n)
            self.out_norm = nn.LayerNorm(n, eps=1e-6)
        else:
            self.skip = nn.Linear(k, n, bias=False)
            self.fc1 = nn.Linear(k, hidden)
            self.fc2 = nn.Linear(hidden, n)
        self.unflatten = nn.Unflatten(1, self.latent_shape)

    def forward(self, x_hat: torch.Tensor) -> torch.Tensor:
        if x_hat.ndim != 2 or x_hat.shape[1] != self.k:
            raise ConfigError("x_hat.shape", tuple(x_hat.shape), f"(B, {self.k}) for code length k")
        if self.arch == "paper":
            u1 = F.relu(self.fc1(x_hat))  # (B, |z|)
            u2 = F.relu(self.fc2(self.norm1(u1)))  # (B, hidden)
            u3 = F.relu(self.fc3(self.norm2(u2)))  # (B, |z|)
            out = self.out_norm(u3 + u1)  # residual from the first decoder layer
        else:
            out = self.skip(x_hat) + self.fc2(F.relu(self.fc1(x_hat)))  # (B, |z|)
        return self.unflatten(out)  # (B, C, h, w)


def build_codec(latent_shape: Sequence[int], codec_cfg: Any) -> tuple[nn.Module, nn.Module]:
    """(C_w, C_psi^{-1}) for ``latent_shape`` (C, h, w) from a :class:`CodecConfig`
    (its fc, arch and hidden; for ``arch="adaptive"`` its width, blocks, skip and gate:
    :mod:`meg_lightning.codec.adaptive`).

    Build under ``with torch.device("meta"):`` to count parameters without allocating them.
    """
    shape = _latent_shape(latent_shape)
    k = code_length(codec_cfg.fc, math.prod(shape))
    if codec_cfg.arch == "adaptive":
        from meg_lightning.codec.adaptive import AdaptiveDecoder, AdaptiveEncoder

        kw = dict(width=codec_cfg.width, blocks=codec_cfg.blocks, skip=codec_cfg.skip)
        return (AdaptiveEncoder(shape, k, **kw),
                AdaptiveDecoder(shape, k, gate=codec_cfg.gate, **kw))
    return (CompressionEncoder(shape, k),
            CompressionDecoder(shape, k, hidden=codec_cfg.hidden, arch=codec_cfg.arch))
