"""Separation-based digital baselines in latent space: a KLT scalar quantiser of z, then either a
real channel code (Sionna's 5G NR LDPC + QAM with an MCS table) or an ideal capacity-achieving code.

::

    ES: z (B, C, h, w) --KLT--> y (B, r) --bit allocation + uniform scalar quantisers--> bits (B, K)
        --[CRC]--> LDPC5GEncoder (one or more codewords) --channel interleaver--> QAM Mapper
        --> x: symbols // 2 complex symbols = at most ``symbols`` real symbols
    channel: y = h_b x + n (AWGN: h = 1; Rayleigh block fading: h_b ~ CN(0, 1) per block)
    UE: equalise (perfect CSI) --> Demapper (app LLRs) --deinterleave--> LDPC5GDecoder (BP)
        --> bits_hat --dequantise (erased codewords -> the mean)--> z_hat --> D(z_hat) = I_g

Conventions (DESIGN.md, :mod:`meg_lightning.channels`):

- **Budget.** A scheme gets ``symbols`` REAL channel symbols per image, that of the ``meg`` codec
  at the same fc (``code_length(fc, |z|)``). A complex QAM symbol is one channel use, i.e. two real
  symbols, so the LDPC link sends ``symbols // 2`` QAM symbols (an odd budget leaves one real
  symbol unused); :attr:`SchemeOutput.symbols` reports the real symbols actually used.
- **SNR.** The transmitted real pairs ``(Re, Im) = sqrt(2) * qam`` have unit mean power per real
  symbol and the noise variance per real symbol is ``sigma^2 = 10^(-SNR/10)``, as in the channel
  layer (Sionna's ``no = 2 sigma^2`` at Es = 2). Computed at Sionna's Es = 1 this is ``qam + n``
  with ``n ~ CN(0, sigma^2)``, i.e. Es/N0 per complex symbol = SNR, which is what is simulated.
- **Fading.** The cell's channel draws the gains, each group of consecutive QAM symbols
  (:func:`~meg_lightning.schemes.ldpc.block_sizes`, uneven splits allowed) one gain (Rayleigh
  block fading: ``h_b ~ CN(0, 1)`` per block). The receiver has perfect CSI (the project's
  default) and equalises by zero forcing: the demapper sees ``y / h`` with noise variance
  ``sigma^2 / |h|^2`` per complex symbol, which gives exactly the LLRs of the unequalised symbols
  with h known. ``digital`` has no CSI at the transmitter: on a fading channel its MCS is the
  highest-rate one whose codeword error rate, measured on that fading channel at the cell's
  average SNR, is <= 10% (:meth:`LatentDigitalScheme.choose_mcs_fading`); ``digital-csit``
  (:mod:`.digital_csit`) has perfect CSI at the transmitter and picks an MCS per image.
- **Randomness.** Every random draw (fading, noise) comes from the ``generator`` passed in, so
  a cell is reproducible; the quantiser, the codes, the interleaver and the demapper are
  deterministic.

The quantiser (:class:`LatentQuantizer`) is a fixed-rate transform code: KLT, greedy integer bit
allocation (optimal for the convex distortion-rate curve of each component), and per-component
*uniform* scalar quantisers whose step is the MSE-optimal one for a Gaussian of that component's
variance (Max 1960 / Hui-Neuhoff 2001 step sizes, computed here numerically).

The link (:class:`LdpcLink`) uses ``sionna.phy.fec.ldpc.LDPC5GEncoder`` / ``LDPC5GDecoder``
(flooding BP, boxplus-phi, ``num_iter`` iterations) and ``sionna.phy.mapping.Mapper`` /
``Demapper`` (QAM, exact "app" LLRs); see :data:`MCS_TABLE` and :data:`MEASURED_THRESHOLDS_DB` for
the MCSs and their required SNRs.
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from meg_lightning.codecs.base import code_length
from meg_lightning.errors import ConfigError
from meg_lightning.metrics.flops import ldpc_decode_gflops
from meg_lightning.schemes.base import (
    DM_SUFFIX,
    SCHEMES,
    LatentTransmission,
    SchemeOutput,
    link_snr,
)
from meg_lightning.schemes.ideal import awgn_capacity_bits, group_sizes, mutual_information
from meg_lightning.schemes.ldpc import (
    K_MIN,
    MCS_TABLE,
    LdpcLink,
    code_layout,
    fading_threshold_db,
    required_snr_db,
)
from meg_lightning.schemes.quantizer import LatentQuantizer

# ============================================================================ the schemes


class _Separation(LatentTransmission):
    """What both separation schemes share: the budget of the learned codec at fc, built from the
    training latents (the quantiser's KLT)."""

    uses_fc = True
    digital = True

    @classmethod
    def build(cls, ctx, fc):
        return cls(ctx.z_train(), ctx.decode_image, code_length(fc, ctx.numel), fc=fc)

    @classmethod
    def rate_key(cls, ctx) -> str:
        """The config key that set this scheme's fc: ``eval.scheme_fcs.<name>`` (or of its
        ``<name>+dm``) when the config has one, else ``eval.fcs``."""
        own = getattr(getattr(getattr(ctx, "cfg", None), "eval", None), "scheme_fcs", None) or {}
        for name in (cls.name, cls.name + DM_SUFFIX):
            if name in own:
                return f"eval.scheme_fcs.{name}"
        return "eval.fcs"

    @torch.no_grad()
    def transmit(self, z, *, channel, generator=None):
        out = self(z, None, channel=channel, generator=generator, decode=False)
        return out.z_hat, out.symbols


@SCHEMES.register("digital")
class LatentDigitalScheme(_Separation):
    """``digital``: separation in latent space with a real code (Sionna 5G LDPC + QAM).

    z -> :class:`LatentQuantizer` (K bits) -> :class:`LdpcLink` (``symbols // 2`` QAM symbols)
    -> channel -> bits_hat -> dequantise -> z_hat -> ``decode_image(z_hat)``.

    MCS (``mcs=None``): the highest-rate MCS of :data:`MCS_TABLE` whose measured codeword error
    rate at the cell's (average) SNR is at most :data:`~meg_lightning.schemes.ldpc.TARGET_BLER`
    (10%), i.e. whose threshold (the SNR where that rate reaches 10%) is <= the cell's SNR:

    - **AWGN**: the AWGN thresholds (:func:`required_snr_db`, or ``thresholds_db`` if given: one
      per MCS, None for an MCS not to use);
    - **fading** (no CSI at the transmitter; :meth:`choose_mcs_fading`): the thresholds measured
      on the cell's fading channel model at its average SNR
      (:func:`~meg_lightning.schemes.ldpc.fading_threshold_db`: the channel kind, its settings
      and its gain groups over this budget, e.g. ``channel.num_blocks`` Rayleigh blocks), the
      outage-constrained fixed-rate design: at most 10% of the codewords fail, on average over
      the fades;
    - **noiseless**: the highest-rate MCS.

    When no MCS meets the target at this SNR, the most robust MCS (the lowest-rate one that fits)
    is sent anyway and fails more often than 10% (its ``bler`` shows by how much). With
    ``mcs=<index>`` that MCS is always used (sweep all and take the envelope, as JSCC papers
    report). The quantiser's budget K is the LDPC information bits of the chosen MCS minus the
    CRC bits if ``crc`` is set (see :class:`LdpcLink` for failure detection).

    ``SchemeOutput.symbols`` is the real symbols of the budget, ``2 * (symbols // 2)``. The UE
    runs the LDPC decoder (:func:`~meg_lightning.metrics.flops.ldpc_decode_gflops`) and D; the
    quantiser and the LDPC encoder are bit work (0 GFLOPs).

    ``info`` (each (B,) per image): ``bler`` (fraction of codewords decoded wrongly, against
    the sent bits), ``mcs`` (index), ``payload_bits`` (K), ``success`` (1.0 if every codeword
    decoded), ``codewords``.
    """

    order = 50
    hue = "tab:olive"
    channel_code = "ldpc"
    summary = ("5G LDPC + QAM without CSI at the transmitter, its MCS from thresholds measured "
               "on the cell's channel")

    def __init__(self, z_train: Tensor, decode_image: Callable[[Tensor], Tensor], symbols: int, *,
                 fc: Optional[float] = None, mcs: Optional[int] = None, num_iter: int = 20,
                 crc: Optional[str] = None,
                 thresholds_db: Optional[Sequence[Optional[float]]] = None,
                 quantizer: Optional[LatentQuantizer] = None):
        if isinstance(symbols, bool) or int(symbols) != symbols or symbols < 2:
            raise ValueError(f"symbols must be an integer >= 2 (real symbols per image), got {symbols!r}")
        self.symbols, self.n_complex = int(symbols), int(symbols) // 2
        self.fc = fc
        self.decode_image = decode_image
        self.num_iter, self.crc = int(num_iter), crc
        self.quantizer = quantizer if quantizer is not None else LatentQuantizer(z_train)
        crc_len = 0
        if crc is not None:
            from sionna.phy.fec.crc import CRCEncoder  # noqa: PLC0415 - heavy, only with a CRC

            crc_len = CRCEncoder(crc).crc_length
        self.feasible = [m.index for m in MCS_TABLE
                         if code_layout(self.n_complex, m, crc_len) is not None]
        if not self.feasible:
            raise ValueError(f"no MCS fits {self.symbols} real symbols ({self.n_complex} QAM "
                             f"symbols): a 5G LDPC codeword needs k >= {K_MIN} information bits")
        if mcs is not None:
            if isinstance(mcs, bool) or not isinstance(mcs, int) or not 0 <= mcs < len(MCS_TABLE):
                raise ValueError(f"mcs must be None or an index in 0..{len(MCS_TABLE) - 1}, got {mcs!r}")
            if mcs not in self.feasible:
                raise ValueError(f"MCS {mcs} ({MCS_TABLE[mcs].name}) does not fit {self.symbols} "
                                 f"real symbols; these do: {self.feasible}")
        self.mcs = mcs
        if thresholds_db is not None and len(thresholds_db) != len(MCS_TABLE):
            raise ValueError(f"thresholds_db needs one entry per MCS ({len(MCS_TABLE)}), got "
                             f"{len(thresholds_db)}")
        self._thresholds = None if thresholds_db is None else list(thresholds_db)
        self._links: dict[tuple[int, str], LdpcLink] = {}

    @classmethod
    def build(cls, ctx, fc):
        try:
            symbols = code_length(fc, ctx.numel)
        except ConfigError as e:
            raise ConfigError(cls.rate_key(ctx), fc, e.expected) from None
        if symbols < 2 or not any(code_layout(symbols // 2, m) is not None for m in MCS_TABLE):
            raise ConfigError(cls.rate_key(ctx), fc,
                              f"a rate whose budget ({symbols} real symbols = {symbols // 2} QAM "
                              f"symbols for |z|={ctx.numel}) fits a 5G LDPC codeword (k >= "
                              f"{K_MIN} information bits) in some MCS of `{cls.name}`")
        return cls(ctx.z_train(), ctx.decode_image, symbols, fc=fc)

    def compute(self, parts):
        return 0.0, ldpc_decode_gflops(self.symbols) + parts.vae_decode, parts.generation

    def threshold_db(self, mcs: int) -> Optional[float]:
        """Required AWGN SNR (dB) of MCS ``mcs`` at this budget (None: not usable)."""
        if mcs not in self.feasible:
            return None
        if self._thresholds is not None:
            return self._thresholds[mcs]
        return required_snr_db(self.n_complex, mcs, self.num_iter)

    def choose_mcs(self, snr_db: Optional[float]) -> int:
        """The MCS index used at ``snr_db`` (None: noiseless; see the class docstring)."""
        if self.mcs is not None:
            return self.mcs
        if snr_db is None:
            return self.feasible[-1]
        for m in reversed(self.feasible):
            t = self.threshold_db(m)
            if t is not None and t <= snr_db:
                return m
        return self.feasible[0]

    def fading_threshold_db(self, mcs: int, channel) -> Optional[float]:
        """Required average SNR (dB) of MCS ``mcs`` at this budget on the fading ``channel``'s
        model (None: not usable): measured on that channel
        (:func:`~meg_lightning.schemes.ldpc.fading_threshold_db`)."""
        if mcs not in self.feasible:
            return None
        return fading_threshold_db(self.n_complex, mcs, channel, self.num_iter)

    def choose_mcs_fading(self, channel) -> int:
        """The MCS used on the fading ``channel`` at its average SNR (see the class docstring):
        the highest-rate feasible MCS whose fading threshold is <= the SNR, else the lowest-rate
        one. A forced ``mcs`` is returned as is.

        The thresholds rise with the MCS index, so the choice is a bisection over the feasible
        MCSs: a threshold not in the shipped table is measured (and cached) only for the few MCSs
        the bisection visits."""
        if self.mcs is not None:
            return self.mcs
        snr = link_snr(channel)
        lo, hi, best = 0, len(self.feasible) - 1, 0
        while lo <= hi:
            mid = (lo + hi) // 2
            t = self.fading_threshold_db(self.feasible[mid], channel)
            if t is not None and t <= snr:
                best, lo = mid, mid + 1
            else:
                hi = mid - 1
        return self.feasible[best]

    def link(self, mcs: int, device: torch.device | str = "cpu") -> LdpcLink:
        key = (mcs, str(device))
        if key not in self._links:
            self._links[key] = LdpcLink(self.n_complex, MCS_TABLE[mcs], num_iter=self.num_iter,
                                        crc=self.crc, device=device)
        return self._links[key]

    @torch.no_grad()
    def __call__(self, z: Tensor, i_0: Optional[Tensor] = None, *, channel,
                 generator: Optional[torch.Generator] = None, prompts=None,
                 decode: bool = True) -> SchemeOutput:
        m = self.mcs_for(channel)
        link = self.link(m, z.device)
        bits = self.quantizer.quantise(z, link.info_bits)  # (B, K)
        out = link.transmit(bits, channel=channel, generator=generator)
        return self.output(z, out, m, decode)

    def mcs_for(self, channel) -> int:
        """The MCS index used on ``channel`` at its (average) SNR (see the class docstring)."""
        snr = link_snr(channel)
        fading = snr is not None and channel.fading
        return self.choose_mcs_fading(channel) if fading else self.choose_mcs(snr)

    def output(self, z: Tensor, out, m: int, decode: bool = True) -> SchemeOutput:
        """The UE's result from the link's output ``out`` (:class:`~.ldpc.LinkOutput`) for the
        sent latents ``z`` with MCS ``m``: dequantised z_hat (erased codewords -> the mean), the
        image, and ``info``."""
        link = self.link(m, z.device)
        K = link.info_bits
        z_hat = self.quantizer.dequantise(out.bits_hat, K, erased=out.erased, dtype=z.dtype)
        batch = z.shape[0]
        full = lambda v: torch.full((batch,), float(v), dtype=torch.float64)
        bler = out.codeword_error.double().mean(1).cpu()
        info = {"bler": bler, "mcs": full(m), "payload_bits": full(K),
                "success": (~out.codeword_error.any(1)).double().cpu(),
                "codewords": full(link.num_codewords)}
        return SchemeOutput(images=self.decode_image(z_hat) if decode else None,
                            symbols=link.real_symbols, z_hat=z_hat, info=info)


@SCHEMES.register("capacity")
class CapacityDigitalScheme(_Separation):
    """``capacity``: the same quantiser over an ideal capacity-achieving code in the same budget.

    - Without fading: K = floor(symbols * 0.5 log2(1 + SNR)) bits, always decoded.
    - Noiseless: the quantiser's largest budget (:data:`MAX_BITS_PER_COMPONENT` bits per KLT
      component).
    - Fading (no CSI at the transmitter, perfect CSI at the UE): one code over the channel's gain
      groups (``block_sizes(symbols, groups)`` real symbols each) carries the realised mutual
      information I = sum_g n_g 0.5 log2(1 + |h_g|^2 SNR); all or nothing: an outage when I < K,
      and the UE reconstructs the mean latent. The rate K is fixed per SNR:
      ``rayleigh_rate="optimal"`` (default) takes the K minimising the expected modelled distortion
      P(I < K) D(0) + P(I >= K) D(K) (P from 20000 fading draws with a fixed seed, D the
      quantiser's :meth:`~LatentQuantizer.expected_mse`), i.e. the best fixed-rate ideal
      separation scheme with this quantiser; ``"awgn"`` takes the AWGN capacity at the average
      SNR (simpler; often in outage).

    Without fading this bounds every separation scheme with this quantiser (no code carries more
    than capacity); with fading it bounds every fixed-rate one whose failures are all or nothing
    (not quite a split into several codewords that fail separately, at paper-scale budgets).
    ``symbols`` is the full budget. An ideal decoder has no operation count: the UE cost is D's
    (a lower bound). ``info``: ``payload_bits`` (K), ``success`` (no outage), ``bler``
    (1 - success), ``mcs`` (-1).
    """

    order = 60
    hue = "tab:cyan"
    channel_code = "ideal"

    def __init__(self, z_train: Tensor, decode_image: Callable[[Tensor], Tensor], symbols: int, *,
                 fc: Optional[float] = None, rayleigh_rate: str = "optimal",
                 quantizer: Optional[LatentQuantizer] = None):
        if rayleigh_rate not in ("optimal", "awgn"):
            raise ValueError(f"rayleigh_rate must be 'optimal' or 'awgn', got {rayleigh_rate!r}")
        if isinstance(symbols, bool) or int(symbols) != symbols or symbols < 1:
            raise ValueError(f"symbols must be a positive integer, got {symbols!r}")
        self.symbols, self.fc = int(symbols), fc
        self.rayleigh_rate = rayleigh_rate
        self.decode_image = decode_image
        self.quantizer = quantizer if quantizer is not None else LatentQuantizer(z_train)
        self._rate_cache: dict[tuple, int] = {}

    def compute(self, parts):
        return 0.0, parts.vae_decode, parts.generation

    def rate_bits(self, channel) -> int:
        """K, the information bits the ideal code is designed for on ``channel`` (its SNR)."""
        snr_db = link_snr(channel)
        if snr_db is None:
            return self.quantizer.capacity_bits
        awgn = int(math.floor(awgn_capacity_bits(self.symbols, snr_db)))
        if not channel.fading or self.rayleigh_rate == "awgn":
            return awgn
        key = (channel.kind, channel.groups(-(-self.symbols // 2)), snr_db)
        if key not in self._rate_cache:
            g = channel.draw_power_gains(20000, -(-self.symbols // 2),
                                         torch.Generator().manual_seed(0))
            mi = torch.sort(mutual_information(g, group_sizes(self.symbols, channel),
                                               snr_db)).values.numpy()
            K = np.arange(0, awgn + 1)
            p_out = np.searchsorted(mi, K, side="left") / mi.size  # P(I < K)
            q = self.quantizer
            exp_d = p_out * q.expected_mse(0) + (1 - p_out) * q.expected_mse(K)
            self._rate_cache[key] = int(K[int(np.argmin(exp_d))])
        return self._rate_cache[key]

    @torch.no_grad()
    def __call__(self, z: Tensor, i_0: Optional[Tensor] = None, *, channel,
                 generator: Optional[torch.Generator] = None, prompts=None,
                 decode: bool = True) -> SchemeOutput:
        snr = link_snr(channel)
        batch = z.shape[0]
        K = self.rate_bits(channel)
        ok = torch.ones(batch, dtype=torch.bool)
        if snr is not None and channel.fading:
            g = channel.draw_power_gains(batch, -(-self.symbols // 2), generator)  # |h|^2
            ok = mutual_information(g, group_sizes(self.symbols, channel), snr) >= K
        z_hat = self.quantizer.reconstruct(z, K)
        if not bool(ok.all()):
            mean = self.quantizer.mean_latent(batch, dtype=z_hat.dtype, device=z_hat.device)
            z_hat = torch.where(ok.to(z_hat.device).view(-1, *[1] * (z.dim() - 1)), z_hat, mean)
        full = lambda v: torch.full((batch,), float(v), dtype=torch.float64)
        info = {"bler": (~ok).double(), "mcs": full(-1), "payload_bits": full(K),
                "success": ok.double()}
        return SchemeOutput(images=self.decode_image(z_hat) if decode else None,
                            symbols=self.symbols, z_hat=z_hat, info=info)
