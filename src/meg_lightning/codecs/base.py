"""What every codec architecture shares: the registry, the code length and the shape checks.

A codec architecture is one class registered with :data:`ARCHS` in its own file of this package
(``codec.arch``): it builds the compression encoder C_w and decoder C_psi^{-1} (paper Sec. III-C)
as plain ``nn.Module``s, free of Lightning, so that the evaluation sweep and the TorchRL
power-control environment reuse exactly the modules that were trained::

    z (B, C, h, w) --C_w--> x (B, k)          x_hat (B, k) --C_psi^{-1}--> z_hat (B, C, h, w)

Its own settings are its ``Settings`` dataclass (``codec.<arch>.*`` in the config). The code length
is k = round(fc * |z|) (Table II), so one seed costs k real channel symbols.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar, Optional, Sequence

import torch
from torch import nn

from meg_lightning.errors import ConfigError
from meg_lightning.registry import NoSettings, Registry

#: Hidden width of the paper's decoder for |z| = 16384 (Table III); other sizes keep the ratio.
PAPER_HIDDEN = 9000
PAPER_NUMEL = 16384
#: every codec architecture, by ``codec.arch``
ARCHS: Registry = Registry("codec architecture", "codec.arch")


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


def latent_shape_of(latent_shape: Sequence[int]) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in latent_shape)
    if len(shape) != 3 or any(s <= 0 for s in shape):
        raise ConfigError("latent_shape", tuple(latent_shape), "(C, h, w) with positive sizes")
    return shape  # type: ignore[return-value]


def check_code(latent_shape: Sequence[int], k: int) -> tuple[tuple[int, int, int], int]:
    """``(latent_shape, |z|)`` after checking both and that the code length k is in [1, |z|]."""
    shape = latent_shape_of(latent_shape)
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
    """C_w (eq. 2): Flatten + Linear(|z|, k). Output x (B, k), not yet power-normalised. The
    encoder of the ``paper`` and ``mlp`` architectures."""

    def __init__(self, latent_shape: Sequence[int], k: int):
        super().__init__()
        self.latent_shape, self.numel = check_code(latent_shape, k)
        self.k = k
        self.flatten = nn.Flatten()
        self.linear = nn.Linear(self.numel, k)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        check_latents(z, self.latent_shape)
        return self.linear(self.flatten(z))  # (B, k)


def check_code_input(x_hat: torch.Tensor, k: int) -> None:
    """One-line ConfigError when ``x_hat`` is not (B, k)."""
    if x_hat.ndim != 2 or x_hat.shape[1] != k:
        raise ConfigError("x_hat.shape", tuple(x_hat.shape), f"(B, {k}) for code length k")


@dataclasses.dataclass
class HiddenSettings:
    """The decoder width of the dense architectures (``paper``, ``mlp``)."""

    hidden: Optional[int] = None  # decoder hidden width; None = round(9000 |z| / 16384) (Table III)

    def validate(self, prefix: str) -> None:
        if self.hidden is not None and (isinstance(self.hidden, bool) or self.hidden <= 0):
            raise ConfigError(f"{prefix}.hidden", self.hidden, "a positive integer or null")

    def width(self, numel: int) -> int:
        return default_hidden(numel) if self.hidden is None else int(self.hidden)


class CodecArch:
    """A registered codec architecture (``codec.arch``): :meth:`build` returns (C_w, C_psi^{-1})
    for a latent shape (C, h, w) and a code length k.

    ``adaptive`` architectures take the channel state: the encoder ``(z, snr_db)`` and the decoder
    ``(x_hat, snr_db, csi_db)`` with ``csi_db`` (B, segments) each segment's SNR after
    equalisation (:meth:`meg_lightning.channels.Channel.effective_snr_db`); the others ``(z)`` and
    ``(x_hat)``."""

    name: ClassVar[str] = ""
    Settings: ClassVar[type] = NoSettings
    adaptive: ClassVar[bool] = False

    @classmethod
    def build(cls, latent_shape: Sequence[int], k: int, settings: Any) -> tuple[nn.Module, nn.Module]:
        raise NotImplementedError


def settings_for(arch: str, settings: Any = None) -> Any:
    """The ``Settings`` of architecture ``arch`` from an instance, a dict or None (defaults),
    validated (``codec.<arch>.*`` in errors)."""
    cls = ARCHS[arch]
    if settings is None:
        settings = cls.Settings()
    elif isinstance(settings, dict):
        settings = cls.Settings(**settings)
    if hasattr(settings, "validate"):
        settings.validate(f"codec.{arch}")
    return settings


def build_codec(latent_shape: Sequence[int], fc: float, arch: str,
                settings: Any = None) -> tuple[nn.Module, nn.Module]:
    """(C_w, C_psi^{-1}) of architecture ``arch`` for ``latent_shape`` (C, h, w) at rate ``fc``,
    with its settings (instance, dict or None for the defaults).

    Build under ``with torch.device("meta"):`` to count parameters without allocating them.
    """
    shape = latent_shape_of(latent_shape)
    k = code_length(fc, math.prod(shape))
    return ARCHS[arch].build(shape, k, settings_for(arch, settings))
