"""The channel interface every registered channel model implements, and power normalisation.

See the package docstring (:mod:`meg_lightning.channels`) for the conventions. A channel model is
one class registered with :data:`CHANNELS` in its own file; what differs between models is how
the gains are drawn (:meth:`Channel.draw_gains`) and over how many groups of symbols they are
constant (:meth:`Channel.groups`). Power, noise and equalisation are the same for all.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar, Optional, Sequence, Union

import torch
from torch import nn

from meg_lightning.channels.theory import noise_var_from_snr_db
from meg_lightning.errors import ConfigError
from meg_lightning.registry import NoSettings, Registry

#: every channel model, by ``channel.kind``
CHANNELS: Registry = Registry("channel", "channel.kind")
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


def randn(shape: Sequence[int], generator: Optional[torch.Generator], like: torch.Tensor) -> torch.Tensor:
    """Standard normals on ``like``'s device/dtype, drawn from ``generator`` on ITS device.

    A generator on another device still works (the draw is moved), at the cost of a copy.
    """
    if generator is None or generator.device == like.device:
        return torch.randn(*shape, generator=generator, device=like.device, dtype=like.dtype)
    return torch.randn(*shape, generator=generator, device=generator.device, dtype=like.dtype).to(like.device)


def rand(shape: Sequence[int], generator: Optional[torch.Generator], like: torch.Tensor) -> torch.Tensor:
    if generator is None or generator.device == like.device:
        return torch.rand(*shape, generator=generator, device=like.device, dtype=like.dtype)
    return torch.rand(*shape, generator=generator, device=generator.device, dtype=like.dtype).to(like.device)


def complex_symbols(k: int) -> int:
    """Complex channel uses of k real symbols (an odd k is padded with one zero real symbol)."""
    return (k + 1) // 2


def _like(like: Optional[torch.Tensor]) -> torch.Tensor:
    like = torch.empty(0) if like is None else like
    return like if like.is_floating_point() else like.float()


class Channel(nn.Module):
    """The seed link ``y = h sqrt(p) x + n`` (eq. 29; eq. 28 when p = 1; eq. 3 when h = 1).

    ::

        x (B, ...) real ──PowerNormalize──> x_n, scale ──pairs──> c (B, n_c) complex
            ──y = h sqrt(p) c + n, per complex symbol──> y
            ──equaliser (zf | mmse | none, perfect CSI)──> c_hat ──real pairs──> x_hat_n
            ──* scale (side information)──> x_hat (B, ...) same shape and scale as x

    A model subclasses this and says how its gains are drawn: :meth:`draw_gains` returns
    ``(B, groups(n_c))`` complex gains, each constant over ``n_c / groups`` consecutive complex
    symbols (one fading block, or one resource element of an OFDM grid). The transmit power
    ``p`` is allocated per **power block**: ``num_blocks`` equal consecutive blocks of the seed.

    Args (the settings every channel shares, ``channel.*``):
        snr_db: fixed SNR (dB) per real symbol of the unit-power seed; noise variance per real
            symbol ``10^(-snr_db/10)``. Used in ``eval`` mode and in ``train`` mode without a range.
        train_snr_db: optional ``(lo, hi)``; in ``train`` mode the SNR is drawn uniformly in dB per
            sample from this range.
        num_blocks: B power blocks per seed (and, for block fading, fading blocks); the complex
            symbols must split evenly.
        equalizer: ``zf`` (y / a) | ``mmse`` (conj(a) y / (|a|^2 + sigma^2)) | ``none`` (y as is),
            with ``a = h sqrt(p)`` known at the receiver.
        normalize: normalise each sample to unit power before the channel and de-normalise
            ``x_hat`` after it. With ``False`` the caller guarantees unit power (the SNR is defined
            relative to power 1).
        settings: the model's own settings (an instance of its ``Settings`` dataclass;
            ``channel.<kind>.*`` in the config), None for its defaults.

    ``forward(x, *, mode=None, snr_db=None, power=None, h=None, generator=None)`` returns a dict:
        ``x_hat`` (same shape as x), ``h`` (B, groups) complex gains, ``snr_db`` (B,),
        ``noise_var`` (B,) per real symbol, ``y`` (B, n_c) received complex symbols in the
        normalised domain, ``power`` (B, num_blocks) the relative powers used, ``scale`` (B,) the
        normalisation scale (ones when ``normalize=False``), ``csi_db`` (B, segments) the SNR of
        each segment after equalisation, ``snr_db + 10 log10(|h|^2 p)``: what a receiver with
        CSI knows (segments: the finer of the gain groups and the power blocks).
    """

    name: ClassVar[str] = ""  # set by CHANNELS.register
    Settings: ClassVar[type] = NoSettings
    fading: ClassVar[bool] = False  # the gains are random: a transmitter with CSI sees them
    noiseless: ClassVar[bool] = False  # no noise at all (the sweep's reference channel)
    order: ClassVar[int] = 0  # presentation order among the channel models

    def __init__(
        self,
        snr_db: float = 20.0,
        train_snr_db: Optional[Sequence[float]] = None,
        num_blocks: int = 1,
        equalizer: str = "zf",
        normalize: bool = True,
        settings: Any = None,
    ):
        super().__init__()
        if equalizer not in EQUALIZERS:
            raise ConfigError("channel.equalizer", equalizer, f"one of {', '.join(EQUALIZERS)}")
        if not isinstance(num_blocks, int) or isinstance(num_blocks, bool) or num_blocks < 1:
            raise ConfigError("channel.num_blocks", num_blocks, "a positive integer")
        self._check_snr("channel.snr_db", snr_db)
        if train_snr_db is not None:
            r = [float(v) for v in train_snr_db]
            if len(r) != 2 or not all(math.isfinite(v) for v in r) or r[0] > r[1]:
                raise ConfigError("channel.train_snr_db", list(train_snr_db),
                                  "[lo, hi] with finite lo <= hi (dB)")
            train_snr_db = (r[0], r[1])
        if settings is None:
            settings = self.Settings()
        elif isinstance(settings, dict):
            settings = self.Settings(**settings)
        if hasattr(settings, "validate"):
            settings.validate(f"channel.{self.name}")
        self.settings = settings
        self.snr_db = float(snr_db)
        self.train_snr_db = train_snr_db
        self.num_blocks = num_blocks
        self.equalizer = equalizer
        self.normalize = normalize
        self.power_norm = PowerNormalize()

    @property
    def kind(self) -> str:
        """The registered name of this channel model (``channel.kind``)."""
        return self.name

    def common(self) -> dict[str, Any]:
        """The shared settings this channel was built with (constructor keywords)."""
        return dict(snr_db=self.snr_db, train_snr_db=self.train_snr_db,
                    num_blocks=self.num_blocks, equalizer=self.equalizer,
                    normalize=self.normalize)

    def replace(self, **changes: Any) -> "Channel":
        """The same model and settings with some shared settings changed (e.g. another
        ``equalizer`` or ``normalize`` for a code that designs its own receiver)."""
        return type(self)(**{**self.common(), **changes}, settings=self.settings)

    def extra_repr(self) -> str:
        own = ", ".join(f"{k}={v!r}" for k, v in dataclasses.asdict(self.settings).items())
        return (f"kind={self.kind!r}, snr_db={self.snr_db}, train_snr_db={self.train_snr_db}, "
                f"num_blocks={self.num_blocks}, equalizer={self.equalizer!r}, "
                f"normalize={self.normalize}" + (f", {own}" if own else ""))

    # -- what a model defines ------------------------------------------------------------------
    def groups(self, n_c: int) -> int:
        """Independent gains over ``n_c`` complex symbols (each constant over ``n_c / groups``
        consecutive symbols). Block models: ``num_blocks``."""
        return self.num_blocks

    def draw_gains(self, batch: int, n_c: int, generator: Optional[torch.Generator] = None,
                   like: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The complex gains of ``batch`` transmissions of ``n_c`` complex symbols,
        ``(batch, groups(n_c))``, drawn from ``generator``: the one place a gain is drawn.
        ``like`` sets device and real dtype. Default: no fading (h = 1)."""
        like = _like(like)
        ctype = torch.complex64 if like.dtype != torch.float64 else torch.complex128
        return torch.ones(batch, self.groups(n_c), dtype=ctype, device=like.device)

    def draw_power_gains(self, batch: int, n_c: int, generator: Optional[torch.Generator] = None,
                         dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """``|h|^2`` of :meth:`draw_gains`, ``(batch, groups(n_c))`` (on the CPU), for what
        depends on the gains' power only (capacity, outage). A model may draw it directly."""
        device = generator.device if generator is not None else torch.device("cpu")
        h = self.draw_gains(batch, n_c, generator, torch.empty(0, dtype=dtype, device=device))
        return h.abs().pow(2).to(dtype).cpu()

    # -- SNR and power ---------------------------------------------------------------------------
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
            return lo + (hi - lo) * rand((B,), generator, like)
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
        return self._resolve_snr(snr_db, mode, batch_size, generator, _like(like))

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

    def segments(self, n_c: int) -> int:
        """Segments of ``n_c`` complex symbols with one gain and one power each: the finer of the
        gain groups and the power blocks (both must divide ``n_c``)."""
        g, nb = self.groups(n_c), self.num_blocks
        return g * nb // math.gcd(g, nb)

    def check_length(self, k: int) -> int:
        """``n_c``, the complex symbols of a k-symbol seed, after checking that the power blocks
        and the gain groups split them evenly (a one-line ConfigError otherwise)."""
        pad = k % 2
        n_c = (k + pad) // 2
        nb = self.num_blocks
        if n_c % nb:
            raise ConfigError("channel.num_blocks", nb,
                              f"a divisor of the {n_c} complex symbols of the seed (k={k} real "
                              f"symbols{', padded to even' if pad else ''})")
        if n_c % self.segments(n_c):
            raise ConfigError(f"channel.{self.kind}", self.groups(n_c),
                              f"gain groups that divide the {n_c} complex symbols of the seed")
        return n_c

    def effective_snr_db(self, snr_db: torch.Tensor, h: torch.Tensor, power: torch.Tensor
                         ) -> torch.Tensor:
        """Each segment's SNR after equalisation, ``snr_db + 10 log10(|h|^2 p)`` (dB),
        ``(B, segments)``: the receiver's CSI. A segment with no power or a deep fade gives a very
        low (finite) value."""
        S = h.shape[1] * power.shape[1] // math.gcd(h.shape[1], power.shape[1])
        gain = (h.abs().pow(2).float().repeat_interleave(S // h.shape[1], dim=1)
                * power.float().repeat_interleave(S // power.shape[1], dim=1))  # (B, S)
        return snr_db.float().unsqueeze(1) + 10 * torch.log10(gain.clamp_min(1e-12))

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
                On the noiseless channel with ``equalizer="none"`` the output is ``sqrt(p_b) x``.
            h: pre-drawn complex gains (B, groups) (:meth:`draw_gains`): for a transmitter that
                sees them before choosing p_b (the power-control env, eq. 31). None draws them
                from ``generator``.
            generator: the source of every random draw (SNR, gains, noise), for reproducibility.
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
        n_c = self.check_length(k)  # complex channel uses
        S = self.segments(n_c)
        L = n_c // S  # complex symbols per segment

        snr = self._resolve_snr(snr_db, mode, B, generator, flat)  # (B,)
        p = self._resolve_power(power, B, flat)  # (B, nb)
        ctype = torch.complex64 if work == torch.float32 else torch.complex128
        G = self.groups(n_c)
        if h is not None:
            if tuple(h.shape) != (B, G) or not h.is_complex():
                raise ValueError(f"h must be complex with shape {(B, G)}, got {h.dtype} "
                                 f"{tuple(h.shape)}")
            h = h.to(device=x.device, dtype=ctype)
        else:
            h = self.draw_gains(B, n_c, generator, flat).to(ctype)  # (B, G)

        if self.noiseless:
            sigma2 = torch.zeros(B, device=x.device, dtype=work)
            snr_out = torch.full((B,), math.inf, device=x.device, dtype=work)
        else:
            sigma2 = noise_var_from_snr_db(snr)  # (B,) per real symbol
            snr_out = snr

        c = torch.view_as_complex(flat.reshape(B, S, L, 2).contiguous())  # (B, S, L)
        h_s = h if G == S else h.repeat_interleave(S // G, dim=1)  # (B, S)
        p_s = p if p.shape[1] == S else p.repeat_interleave(S // p.shape[1], dim=1)
        a = (h_s * p_s.sqrt()).unsqueeze(-1)  # (B, S, 1) effective gain, eq. 29 with amplitude sqrt(p)
        y = a * c
        if not self.noiseless:
            # complex noise CN(0, 2 sigma^2): variance sigma^2 on each real symbol
            n = randn((B, S, L, 2), generator, flat) * sigma2.sqrt().view(B, 1, 1, 1)
            y = y + torch.view_as_complex(n)

        if self.noiseless and (self.equalizer != "none" or power is None):
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
            "csi_db": self.effective_snr_db(snr_out, h, p),
        }


def build(cfg: Any, kind: Optional[str] = None, **overrides: Any) -> Channel:
    """The channel of ``cfg.channel`` (a ChannelConfig or its dict, or a whole MegConfig): the
    model ``kind`` (default ``channel.kind``) with the shared settings and its own
    (``channel.<kind>.*``); ``overrides`` replace shared settings (e.g. ``snr_db``)."""
    ch = getattr(cfg, "channel", cfg)
    get = ch.get if isinstance(ch, dict) else lambda key, default=None: getattr(ch, key, default)
    kind = get("kind") if kind is None else kind
    cls = CHANNELS[kind]
    kwargs = {key: get(key, default) for key, default in (
        ("snr_db", 20.0), ("train_snr_db", None), ("num_blocks", 1), ("equalizer", "zf"))}
    kwargs.update(overrides)
    own = get(kind) if dataclasses.fields(cls.Settings) else None
    if isinstance(own, dict):
        own = cls.Settings(**own)
    return cls(**kwargs, settings=own)


def make(kind: str, **kwargs: Any) -> Channel:
    """The channel model ``kind`` built with ``kwargs`` (its constructor's: the shared settings
    and ``settings``), e.g. ``make("rayleigh", snr_db=10.0, num_blocks=4)``."""
    return CHANNELS[kind](**kwargs)


def kinds() -> list[str]:
    """Every registered channel model, in presentation order."""
    return CHANNELS.names()
