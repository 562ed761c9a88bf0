"""Power normalisation and the differentiable seed channel (paper eqs. 3, 28-29).

See the package docstring (:mod:`meg_lightning.channel`) for the conventions.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence, Union

import torch
from torch import nn

from meg_lightning.channel.theory import noise_var_from_snr_db
from meg_lightning.errors import ConfigError

KINDS = ("awgn", "rayleigh", "none")
EQUALIZERS = ("zf", "mmse", "none")
MODES = ("train", "eval")

SnrArg = Union[float, int, torch.Tensor, None]


class PowerNormalize(nn.Module):
    """Scale every sample to unit mean power: ``mean(x_normalised^2) = 1`` over all but the batch dim.

    ``forward(x) -> (x_normalised, scale)`` with ``scale`` of shape (B,) and
    ``x == x_normalised * scale`` (up to rounding). An all-zero sample stays zero (its scale is
    clamped to ``eps``, so its mean power is 0, not 1). Differentiable through ``scale``.
    """

    def __init__(self, eps: float = 1e-12):
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.dim() < 2:
            raise ValueError(f"x must have shape (B, ...) with at least 2 dims, got {tuple(x.shape)}")
        scale = x.pow(2).flatten(1).mean(dim=1).sqrt().clamp_min(self.eps)  # (B,)
        return x / scale.view(-1, *([1] * (x.dim() - 1))), scale


def _randn(shape: Sequence[int], generator: Optional[torch.Generator], like: torch.Tensor) -> torch.Tensor:
    """Standard normals on ``like``'s device/dtype, drawn from ``generator`` on ITS device.

    A generator on another device still works (the draw is moved), at the cost of a copy.
    """
    if generator is None or generator.device == like.device:
        return torch.randn(*shape, generator=generator, device=like.device, dtype=like.dtype)
    return torch.randn(*shape, generator=generator, device=generator.device, dtype=like.dtype).to(like.device)


def _rand(shape: Sequence[int], generator: Optional[torch.Generator], like: torch.Tensor) -> torch.Tensor:
    if generator is None or generator.device == like.device:
        return torch.rand(*shape, generator=generator, device=like.device, dtype=like.dtype)
    return torch.rand(*shape, generator=generator, device=generator.device, dtype=like.dtype).to(like.device)


class Channel(nn.Module):
    """The seed link ``y_b = h_b sqrt(p_b) x_b + n`` (eq. 29; eq. 28 when p_b = 1; eq. 3 when B = 1).

    ::

        x (B, ...) real ──PowerNormalize──> x_n, scale ──pairs──> c (B, k/2) complex
            ──cut into num_blocks blocks──> c_b ──y_b = h_b sqrt(p_b) c_b + n_b──> y
            ──equaliser (zf | mmse | none, perfect CSI)──> c_hat ──real pairs──> x_hat_n
            ──* scale (side information)──> x_hat (B, ...) same shape and scale as x

    Args:
        kind: ``awgn`` (h = 1) | ``rayleigh`` (block fading, h_b ~ CN(0, 1)) | ``none`` (noiseless;
            ``x_hat`` is ``x`` itself).
        snr_db: fixed SNR (dB) per real symbol of the unit-power seed; noise variance per real
            symbol ``10^(-snr_db/10)``. Used in ``eval`` mode and in ``train`` mode without a range.
        train_snr_db: optional ``(lo, hi)``; in ``train`` mode the SNR is drawn uniformly in dB per
            sample from this range.
        num_blocks: B fading blocks per seed; the k/2 complex symbols must split evenly.
            Also the granularity of the power allocation (for every kind).
        equalizer: ``zf`` (y / a) | ``mmse`` (conj(a) y / (|a|^2 + sigma^2)) | ``none`` (y as is),
            with ``a = h_b sqrt(p_b)`` known at the receiver.
        normalize: normalise each sample to unit power before the channel and de-normalise
            ``x_hat`` after it. With ``False`` the caller guarantees unit power (the SNR is defined
            relative to power 1).

    ``forward(x, *, mode=None, snr_db=None, power=None, generator=None)`` returns a dict:
        ``x_hat`` (same shape as x), ``h`` (B, num_blocks) complex, ``snr_db`` (B,),
        ``noise_var`` (B,) per real symbol, ``y`` (B, ceil(k/2)) received complex symbols in the
        normalised domain (blocks consecutive), ``power`` (B, num_blocks) the relative powers used,
        ``scale`` (B,) the normalisation scale (ones when ``normalize=False``).
    """

    def __init__(
        self,
        kind: str = "awgn",
        snr_db: float = 20.0,
        train_snr_db: Optional[Sequence[float]] = None,
        num_blocks: int = 1,
        equalizer: str = "zf",
        normalize: bool = True,
    ):
        super().__init__()
        if kind not in KINDS:
            raise ConfigError("channel.kind", kind, "one of awgn, rayleigh, none")
        if equalizer not in EQUALIZERS:
            raise ConfigError("channel.equalizer", equalizer, "one of zf, mmse, none")
        if not isinstance(num_blocks, int) or isinstance(num_blocks, bool) or num_blocks < 1:
            raise ConfigError("channel.num_blocks", num_blocks, "a positive integer")
        self._check_snr("channel.snr_db", snr_db)
        if train_snr_db is not None:
            r = [float(v) for v in train_snr_db]
            if len(r) != 2 or not all(math.isfinite(v) for v in r) or r[0] > r[1]:
                raise ConfigError("channel.train_snr_db", list(train_snr_db),
                                  "[lo, hi] with finite lo <= hi (dB)")
            train_snr_db = (r[0], r[1])
        self.kind = kind
        self.snr_db = float(snr_db)
        self.train_snr_db = train_snr_db
        self.num_blocks = num_blocks
        self.equalizer = equalizer
        self.normalize = normalize
        self.power_norm = PowerNormalize()

    @classmethod
    def from_config(cls, cfg: Any, **overrides: Any) -> "Channel":
        """Build from a :class:`meg_lightning.config.ChannelConfig` (or a whole ``MegConfig``)."""
        cfg = getattr(cfg, "channel", cfg)
        kwargs = dict(kind=cfg.kind, snr_db=cfg.snr_db, train_snr_db=cfg.train_snr_db,
                      num_blocks=cfg.num_blocks, equalizer=cfg.equalizer)
        kwargs.update(overrides)
        return cls(**kwargs)

    def extra_repr(self) -> str:
        return (f"kind={self.kind!r}, snr_db={self.snr_db}, train_snr_db={self.train_snr_db}, "
                f"num_blocks={self.num_blocks}, equalizer={self.equalizer!r}, normalize={self.normalize}")

    @staticmethod
    def _check_snr(key: str, snr_db: Any) -> None:
        if isinstance(snr_db, torch.Tensor):
            bad = ~torch.isfinite(snr_db)
            if bool(bad.any()):
                raise ConfigError(key, float(snr_db[bad].flatten()[0]), "finite SNR values (dB)")
        elif isinstance(snr_db, bool) or not isinstance(snr_db, (int, float)) or not math.isfinite(snr_db):
            raise ConfigError(key, snr_db, "a finite number (dB) or a (B,) tensor of them")

    def _resolve_snr(self, snr_db: SnrArg, mode: str, B: int, generator: Optional[torch.Generator],
                     like: torch.Tensor) -> torch.Tensor:
        """The SNR (dB) of each sample, shape (B,)."""
        if snr_db is not None:
            self._check_snr("snr_db", snr_db)
            if isinstance(snr_db, torch.Tensor):
                if snr_db.dim() > 1 or (snr_db.dim() == 1 and snr_db.numel() not in (1, B)):
                    raise ValueError(f"snr_db tensor must be a scalar or have shape ({B},), "
                                     f"got {tuple(snr_db.shape)}")
                return snr_db.to(device=like.device, dtype=like.dtype).reshape(-1).expand(B).clone()
            return torch.full((B,), float(snr_db), device=like.device, dtype=like.dtype)
        if mode == "train" and self.train_snr_db is not None:
            lo, hi = self.train_snr_db
            return lo + (hi - lo) * _rand((B,), generator, like)
        return torch.full((B,), self.snr_db, device=like.device, dtype=like.dtype)

    def draw_snr(self, batch_size: int, *, mode: str = "eval", snr_db: SnrArg = None,
                 generator: Optional[torch.Generator] = None,
                 like: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The SNR (dB) of each of ``batch_size`` samples, shape (B,), as :meth:`forward` would
        draw it: ``snr_db`` if given, else in ``train`` mode uniform in ``train_snr_db`` (dB) when
        set, else ``self.snr_db``. ``like`` sets device and dtype (default float32 on CPU).

        For a transmitter that must know the SNR before it encodes (an SNR-adaptive codec): draw
        it here, then pass it to :meth:`forward` as ``snr_db``. Drawn first from the same
        ``generator``, the sequence of random draws is the same as :meth:`forward`'s own."""
        if mode not in MODES:
            raise ValueError(f"mode must be 'train' or 'eval', got {mode!r}")
        like = torch.empty(0) if like is None else like
        if not like.is_floating_point():
            like = like.float()
        return self._resolve_snr(snr_db, mode, batch_size, generator, like)

    def _resolve_power(self, power: Optional[torch.Tensor], B: int, like: torch.Tensor) -> torch.Tensor:
        """Relative block powers, shape (B, num_blocks); ones (no allocation) when ``power`` is None."""
        nb = self.num_blocks
        if power is None:
            return torch.ones(B, nb, device=like.device, dtype=like.dtype)
        if not isinstance(power, torch.Tensor):
            power = torch.as_tensor(power)
        if power.shape[-1:] != (nb,) or power.dim() > 2 or (power.dim() == 2 and power.shape[0] not in (1, B)):
            raise ValueError(f"power must have shape ({B}, {nb}) (or ({nb},)), got {tuple(power.shape)}")
        if bool((power < 0).any()) or not bool(torch.isfinite(power).all()):
            raise ValueError(f"power must be finite and >= 0, got min {float(power.min())}, "
                             f"max {float(power.max())}")
        return power.to(device=like.device, dtype=like.dtype).expand(B, nb)

    def forward(
        self,
        x: torch.Tensor,
        *,
        mode: Optional[str] = None,
        snr_db: SnrArg = None,
        power: Optional[torch.Tensor] = None,
        h: Optional[torch.Tensor] = None,
        generator: Optional[torch.Generator] = None,
    ) -> dict[str, torch.Tensor]:
        """Send ``x`` (B, ...) real through the channel; see the class docstring for the outputs.

        Args:
            mode: ``"train"`` (SNR drawn from ``train_snr_db`` when set) | ``"eval"`` (fixed
                ``snr_db``); None means ``"train"`` if ``self.training`` else ``"eval"``.
            snr_db: overrides the SNR: a python number or a (B,) / scalar tensor (per-sample SNR).
            power: relative block powers p_b >= 0, shape (B, num_blocks) or (num_blocks,); None is
                the same as all ones. ``zf`` outputs 0 (the prior mean) on a block with p_b = 0.
                With ``kind="none"`` and ``equalizer="none"`` the output is ``sqrt(p_b) x``.
            h: pre-drawn complex fading gains (B, num_blocks), ``kind="rayleigh"`` only: for a
                transmitter that sees h_b before choosing p_b (the power-control env, eq. 31).
                None draws h_b ~ CN(0, 1) from ``generator``.
            generator: the source of every random draw (SNR, fading, noise), for reproducibility.
                Best on ``x.device``; on another device the draws are copied over.

        Checking SNR / power tensors for bad values reads them back (a device sync on GPU).
        """
        if mode is None:
            mode = "train" if self.training else "eval"
        if mode not in MODES:
            raise ValueError(f"mode must be 'train' or 'eval', got {mode!r}")
        if x.dim() < 2:
            raise ValueError(f"x must have shape (B, ...) with at least 2 dims, got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"x must be a real floating tensor, got dtype {x.dtype}")
        B, k = x.shape[0], x[0].numel()
        # complex arithmetic in half precision is poorly supported: compute in >= float32.
        work = torch.promote_types(x.dtype, torch.float32)
        xw = x.to(work)

        if self.normalize:
            x_n, scale = self.power_norm(xw)
        else:
            x_n, scale = xw, torch.ones(B, device=x.device, dtype=work)
        flat = x_n.reshape(B, k)  # (B, k)
        # An odd k gets one zero real symbol so that the last complex use is complete; it carries
        # no power (the normalisation above saw only the k real symbols) and is dropped at the end.
        pad = k % 2
        if pad:
            flat = torch.nn.functional.pad(flat, (0, 1))
        n_c = (k + pad) // 2  # complex channel uses
        nb = self.num_blocks
        if n_c % nb:
            raise ConfigError("channel.num_blocks", nb,
                              f"a divisor of the {n_c} complex symbols of the seed (k={k} real "
                              f"symbols{', padded to even' if pad else ''})")
        L = n_c // nb  # complex symbols per fading block

        snr = self._resolve_snr(snr_db, mode, B, generator, flat)  # (B,)
        p = self._resolve_power(power, B, flat)  # (B, nb)
        ctype = torch.complex64 if work == torch.float32 else torch.complex128

        if h is not None:
            if self.kind != "rayleigh":
                raise ValueError(f"h= is for kind='rayleigh', got kind={self.kind!r}")
            if tuple(h.shape) != (B, nb) or not h.is_complex():
                raise ValueError(f"h must be complex with shape {(B, nb)}, got {h.dtype} "
                                 f"{tuple(h.shape)}")
            h = h.to(device=x.device, dtype=ctype)
        elif self.kind == "rayleigh":
            # h_b ~ CN(0, 1): real and imaginary parts N(0, 1/2), so E|h|^2 = 1 (as sionna).
            g = _randn((B, nb, 2), generator, flat) * math.sqrt(0.5)
            h = torch.complex(g[..., 0], g[..., 1])  # (B, nb)
        else:
            h = torch.ones(B, nb, dtype=ctype, device=x.device)

        if self.kind == "none":
            sigma2 = torch.zeros(B, device=x.device, dtype=work)
            snr_out = torch.full((B,), math.inf, device=x.device, dtype=work)
        else:
            sigma2 = noise_var_from_snr_db(snr)  # (B,) per real symbol
            snr_out = snr

        c = torch.view_as_complex(flat.reshape(B, nb, L, 2).contiguous())  # (B, nb, L)
        a = (h * p.sqrt()).unsqueeze(-1)  # (B, nb, 1) effective gain, eq. 29 with amplitude sqrt(p)
        y = a * c
        if self.kind != "none":
            # complex noise CN(0, 2 sigma^2): variance sigma^2 on each real symbol
            n = _randn((B, nb, L, 2), generator, flat) * sigma2.sqrt().view(B, 1, 1, 1)
            y = y + torch.view_as_complex(n)

        if self.kind == "none" and (self.equalizer != "none" or power is None):
            # noiseless with perfect CSI: the equaliser undoes a exactly; return x itself (exact).
            x_hat = x
        else:
            s2 = sigma2.view(B, 1, 1)
            if self.equalizer == "zf":
                # a = 0 (a block given no power): nothing arrived, output the prior mean 0.
                nz = a.abs() > 0
                c_hat = torch.where(nz, y / torch.where(nz, a, torch.ones_like(a)), torch.zeros_like(y))
            elif self.equalizer == "mmse":
                # LMMSE for unit-power real symbols with noise sigma^2 per real dimension
                c_hat = a.conj() * y / (a.abs().pow(2) + s2)
            else:
                c_hat = y
            x_hat_n = torch.view_as_real(c_hat).reshape(B, 2 * n_c)[:, :k]  # (B, k)
            x_hat = (x_hat_n * scale.unsqueeze(1)).reshape(x.shape).to(x.dtype)

        return {
            "x_hat": x_hat,
            "h": h,
            "snr_db": snr_out,
            "noise_var": sigma2,
            "y": y.reshape(B, n_c),
            "power": p,
            "scale": scale,
        }
