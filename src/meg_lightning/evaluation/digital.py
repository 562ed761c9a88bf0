"""Separation-based digital baselines in latent space: a KLT scalar quantiser of z, then either a
real channel code (Sionna's 5G NR LDPC + QAM with an MCS table) or an ideal capacity-achieving code.

::

    ES: z (B, C, h, w) --KLT--> y (B, r) --bit allocation + uniform scalar quantisers--> bits (B, K)
        --[CRC]--> LDPC5GEncoder (one or more codewords) --channel interleaver--> QAM Mapper
        --> x: symbols // 2 complex symbols = at most ``symbols`` real symbols
    channel: y = h_b x + n (AWGN: h = 1; Rayleigh block fading: h_b ~ CN(0, 1) per block)
    UE: equalise (perfect CSI) --> Demapper (app LLRs) --deinterleave--> LDPC5GDecoder (BP)
        --> bits_hat --dequantise (erased codewords -> the mean)--> z_hat --> D(z_hat) = I_g

Conventions (DESIGN.md, :mod:`meg_lightning.channel`):

- **Budget.** A scheme gets ``symbols`` REAL channel symbols per image, that of the ``meg`` codec
  at the same fc (``code_length(fc, |z|)``). A complex QAM symbol is one channel use, i.e. two real
  symbols, so the LDPC link sends ``symbols // 2`` QAM symbols (an odd budget leaves one real
  symbol unused); :attr:`SchemeOutput.symbols` reports the real symbols actually used.
- **SNR.** The transmitted real pairs ``(Re, Im) = sqrt(2) * qam`` have unit mean power per real
  symbol and the noise variance per real symbol is ``sigma^2 = 10^(-SNR/10)``, as in the channel
  layer (Sionna's ``no = 2 sigma^2`` at Es = 2). Computed at Sionna's Es = 1 this is ``qam + n``
  with ``n ~ CN(0, sigma^2)``, i.e. Es/N0 per complex symbol = SNR, which is what is simulated.
- **Rayleigh block fading.** The QAM symbols are cut into ``num_blocks`` consecutive blocks of
  :func:`~meg_lightning.evaluation.schemes.block_sizes` (uneven splits allowed), block b sees
  ``h_b ~ CN(0, 1)`` independent across blocks and images. The receiver has perfect CSI (the
  project's default) and equalises by zero forcing: the demapper sees ``y / h_b`` with noise
  variance ``sigma^2 / |h_b|^2`` per complex symbol, which gives exactly the LLRs of the
  unequalised symbols with h known. The transmitter has no CSI: the MCS is chosen from the
  average SNR.
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

from meg_lightning.channel.ldpc import (K_MIN, KINDS, MCS_TABLE, LdpcLink, block_sizes,
                                        code_layout, required_snr_db)
from meg_lightning.codec.quantizer import LatentQuantizer
from meg_lightning.evaluation.registry import register
from meg_lightning.evaluation.schemes import (LatentTransmission, SchemeOutput,
                                              awgn_capacity_bits)

# ============================================================================ the schemes


def _check_kind(kind: str, num_blocks: int) -> None:
    if kind not in KINDS:
        raise ValueError(f"channel kind must be one of {KINDS}, got {kind!r}")
    if isinstance(num_blocks, bool) or not isinstance(num_blocks, int) or num_blocks < 1:
        raise ValueError(f"num_blocks must be a positive integer, got {num_blocks!r}")


def _snr(snr_db) -> Optional[float]:
    if snr_db is None:
        return None
    s = float(snr_db)
    if not math.isfinite(s):
        raise ValueError(f"snr_db must be finite or None, got {snr_db!r}")
    return s


class _Separation(LatentTransmission):
    """What both separation schemes share: the budget of `meg` at fc, built from the training
    latents (the quantiser's KLT) and the cell's channel kind."""

    uses_fc = True

    @classmethod
    def build(cls, ctx, fc, kind):
        from meg_lightning.codec.components import code_length

        return cls(ctx.z_train(), ctx.decode_image, code_length(fc, math.prod(ctx.latent_shape)),
                   kind=kind, num_blocks=ctx.cfg.channel.num_blocks, fc=fc)

    @torch.no_grad()
    def transmit(self, z, *, channel=None, snr_db=None, generator=None):
        out = self(z, None, channel=channel, snr_db=snr_db, generator=generator, decode=False)
        return out.z_hat, out.symbols


@register
class LatentDigitalScheme(_Separation):
    """``digital``: separation in latent space with a real code (Sionna 5G LDPC + QAM).

    z -> :class:`LatentQuantizer` (K bits) -> :class:`LdpcLink` (``symbols // 2`` QAM symbols)
    -> channel -> bits_hat -> dequantise -> z_hat -> ``decode_image(z_hat)``.

    MCS: with ``mcs=None`` the highest-rate MCS of :data:`MCS_TABLE` whose required AWGN SNR
    (:func:`required_snr_db`, or ``thresholds_db`` if given: one per MCS, None for an MCS not to
    use) is <= the cell's (average) SNR; if none qualifies, the lowest-rate MCS that fits (and it
    fails, mostly). Noiseless (``snr_db=None`` or kind "none"): the highest-rate MCS. With
    ``mcs=<index>`` that MCS is always used (sweep all and take the envelope, as JSCC papers
    report). The quantiser's budget K is the LDPC information bits of the chosen MCS minus the
    CRC bits if ``crc`` is set (see :class:`LdpcLink` for failure detection).

    On Rayleigh block fading the MCS is still chosen from the AWGN thresholds at the average SNR
    (no CSI at the transmitter), so it is often in outage there; a forced-MCS sweep and its
    envelope shows the best fixed MCS per SNR.

    The link is the one of the constructor (``kind``, ``num_blocks``); the ``channel`` argument of
    ``__call__`` is accepted for the common scheme signature and not used, and ``snr_db=None``
    means a noiseless link. ``SchemeOutput.symbols`` is the real symbols used,
    ``2 * (symbols // 2)``.

    ``info`` (each (B,) per image): ``bler`` (fraction of codewords decoded wrongly, against
    the sent bits), ``mcs`` (index), ``payload_bits`` (K), ``success`` (1.0 if every codeword
    decoded), ``codewords``.
    """

    name = "digital"

    @classmethod
    def compute(cls, parts, fc):
        # the quantiser and the LDPC encoder are bit work (0 GFLOPs); the UE runs the LDPC
        # decoder (evaluation.flops.ldpc_decode_gflops) and D
        return 0.0, parts.at("digital_decode", fc) + parts.vae_decode, parts.generation

    def __init__(self, z_train: Tensor, decode_image: Callable[[Tensor], Tensor], symbols: int, *,
                 kind: str = "awgn", num_blocks: int = 1, fc: Optional[float] = None,
                 mcs: Optional[int] = None, num_iter: int = 20, crc: Optional[str] = None,
                 thresholds_db: Optional[Sequence[Optional[float]]] = None,
                 quantizer: Optional[LatentQuantizer] = None):
        _check_kind(kind, num_blocks)
        if isinstance(symbols, bool) or int(symbols) != symbols or symbols < 2:
            raise ValueError(f"symbols must be an integer >= 2 (real symbols per image), got {symbols!r}")
        self.symbols, self.n_complex = int(symbols), int(symbols) // 2
        self.kind, self.num_blocks, self.fc = kind, num_blocks, fc
        self.decode_image = decode_image
        self.num_iter, self.crc = int(num_iter), crc
        self.quantizer = quantizer if quantizer is not None else LatentQuantizer(z_train)
        crc_len = 0
        if crc is not None:
            from sionna.phy.fec.crc import CRCEncoder

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

    def threshold_db(self, mcs: int) -> Optional[float]:
        """Required AWGN SNR (dB) of MCS ``mcs`` at this budget (None: not usable)."""
        if mcs not in self.feasible:
            return None
        if self._thresholds is not None:
            return self._thresholds[mcs]
        return required_snr_db(self.n_complex, mcs, self.num_iter)

    def choose_mcs(self, snr_db: Optional[float]) -> int:
        """The MCS index used at ``snr_db`` (see the class docstring)."""
        if self.mcs is not None:
            return self.mcs
        if snr_db is None or self.kind == "none":
            return self.feasible[-1]
        for m in reversed(self.feasible):
            t = self.threshold_db(m)
            if t is not None and t <= snr_db:
                return m
        return self.feasible[0]

    def link(self, mcs: int, device: torch.device | str = "cpu") -> LdpcLink:
        key = (mcs, str(device))
        if key not in self._links:
            self._links[key] = LdpcLink(self.n_complex, MCS_TABLE[mcs], num_iter=self.num_iter,
                                        crc=self.crc, device=device)
        return self._links[key]

    @torch.no_grad()
    def __call__(self, z: Tensor, i_0: Optional[Tensor] = None, *, channel=None,
                 snr_db: Optional[float] = None, generator: Optional[torch.Generator] = None,
                 prompts=None, decode: bool = True) -> SchemeOutput:
        snr = _snr(snr_db)
        kind = "none" if snr is None else self.kind
        m = self.choose_mcs(snr)
        link = self.link(m, z.device)
        K = link.info_bits
        bits = self.quantizer.quantise(z, K)  # (B, K)
        out = link.transmit(bits, kind=kind, snr_db=snr, num_blocks=self.num_blocks,
                            generator=generator)
        z_hat = self.quantizer.dequantise(out.bits_hat, K, erased=out.erased, dtype=z.dtype)
        batch = z.shape[0]
        full = lambda v: torch.full((batch,), float(v), dtype=torch.float64)
        bler = out.codeword_error.double().mean(1).cpu()
        info = {"bler": bler, "mcs": full(m), "payload_bits": full(K),
                "success": (~out.codeword_error.any(1)).double().cpu(),
                "codewords": full(link.num_codewords)}
        return SchemeOutput(images=self.decode_image(z_hat) if decode else None,
                            symbols=link.real_symbols, z_hat=z_hat, info=info)


@register
class CapacityDigitalScheme(_Separation):
    """``capacity``: the same quantiser over an ideal capacity-achieving code in the same budget.

    - AWGN: K = floor(symbols * 0.5 log2(1 + SNR)) bits, always decoded.
    - Noiseless (kind "none" or ``snr_db=None``): the quantiser's largest budget
      (:data:`MAX_BITS_PER_COMPONENT` bits per KLT component).
    - Rayleigh block fading (no CSI at the transmitter, perfect CSI at the UE): one code over the
      ``num_blocks`` blocks (``block_sizes(symbols, num_blocks)`` real symbols each) carries the
      realised mutual information I = sum_b n_b 0.5 log2(1 + |h_b|^2 SNR); all or nothing: an
      outage when I < K, and the UE reconstructs the mean latent. The rate K is fixed per SNR:
      ``rayleigh_rate="optimal"`` (default) takes the K minimising the expected modelled distortion
      P(I < K) D(0) + P(I >= K) D(K) (P from 20000 fading draws with a fixed seed, D the
      quantiser's :meth:`~LatentQuantizer.expected_mse`), i.e. the best fixed-rate ideal
      separation scheme with this quantiser; ``"awgn"`` takes the AWGN capacity at the average
      SNR (simpler; often in outage).

    On AWGN this bounds every separation scheme with this quantiser (no code carries more than
    capacity); on block fading it bounds every fixed-rate one whose failures are all or nothing
    (not quite a split into several codewords that fail separately, at paper-scale budgets).
    ``channel`` is not used (as in :class:`LatentDigitalScheme`); ``symbols`` is the full budget.
    ``info``: ``payload_bits`` (K), ``success`` (no outage), ``bler`` (1 - success), ``mcs`` (-1).
    """

    name = "capacity"

    @classmethod
    def compute(cls, parts, fc):
        # an ideal decoder has no operation count: the UE cost is D's (a lower bound)
        return 0.0, parts.vae_decode, parts.generation

    def __init__(self, z_train: Tensor, decode_image: Callable[[Tensor], Tensor], symbols: int, *,
                 kind: str = "awgn", num_blocks: int = 1, fc: Optional[float] = None,
                 rayleigh_rate: str = "optimal", quantizer: Optional[LatentQuantizer] = None):
        _check_kind(kind, num_blocks)
        if rayleigh_rate not in ("optimal", "awgn"):
            raise ValueError(f"rayleigh_rate must be 'optimal' or 'awgn', got {rayleigh_rate!r}")
        if isinstance(symbols, bool) or int(symbols) != symbols or symbols < 1:
            raise ValueError(f"symbols must be a positive integer, got {symbols!r}")
        self.symbols, self.kind, self.num_blocks, self.fc = int(symbols), kind, num_blocks, fc
        self.rayleigh_rate = rayleigh_rate
        self.decode_image = decode_image
        self.quantizer = quantizer if quantizer is not None else LatentQuantizer(z_train)
        self._rate_cache: dict[float, int] = {}

    def _block_sizes(self) -> Tensor:
        return torch.tensor(block_sizes(self.symbols, self.num_blocks), dtype=torch.float64)

    def mutual_information(self, gains: Tensor, snr_db: float) -> Tensor:
        """Bits carried for fading power gains |h_b|^2 (..., num_blocks) at average ``snr_db``."""
        return (self._block_sizes() * 0.5 * torch.log2(1 + gains * 10 ** (snr_db / 10))).sum(-1)

    def rate_bits(self, snr_db: Optional[float]) -> int:
        """K, the information bits the ideal code is designed for at ``snr_db``."""
        if snr_db is None or self.kind == "none":
            return self.quantizer.capacity_bits
        awgn = int(math.floor(awgn_capacity_bits(self.symbols, snr_db)))
        if self.kind == "awgn" or self.rayleigh_rate == "awgn":
            return awgn
        if snr_db not in self._rate_cache:
            g = torch.empty(20000, self.num_blocks, dtype=torch.float64)
            g.exponential_(1.0, generator=torch.Generator().manual_seed(0))
            mi = torch.sort(self.mutual_information(g, snr_db)).values.numpy()
            K = np.arange(0, awgn + 1)
            p_out = np.searchsorted(mi, K, side="left") / mi.size  # P(I < K)
            q = self.quantizer
            exp_d = p_out * q.expected_mse(0) + (1 - p_out) * q.expected_mse(K)
            self._rate_cache[snr_db] = int(K[int(np.argmin(exp_d))])
        return self._rate_cache[snr_db]

    @torch.no_grad()
    def __call__(self, z: Tensor, i_0: Optional[Tensor] = None, *, channel=None,
                 snr_db: Optional[float] = None, generator: Optional[torch.Generator] = None,
                 prompts=None, decode: bool = True) -> SchemeOutput:
        snr = _snr(snr_db)
        batch = z.shape[0]
        K = self.rate_bits(snr)
        ok = torch.ones(batch, dtype=torch.bool)
        if snr is not None and self.kind == "rayleigh":
            device = generator.device if generator is not None else torch.device("cpu")
            g = torch.empty(batch, self.num_blocks, dtype=torch.float64, device=device)
            g = g.exponential_(1.0, generator=generator).cpu()  # |h_b|^2 of h_b ~ CN(0, 1)
            ok = self.mutual_information(g, snr) >= K
        z_hat = self.quantizer.reconstruct(z, K)
        if not bool(ok.all()):
            mean = self.quantizer.mean_latent(batch, dtype=z_hat.dtype, device=z_hat.device)
            z_hat = torch.where(ok.to(z_hat.device).view(-1, *[1] * (z.dim() - 1)), z_hat, mean)
        full = lambda v: torch.full((batch,), float(v), dtype=torch.float64)
        info = {"bler": (~ok).double(), "mcs": full(-1), "payload_bits": full(K),
                "success": ok.double()}
        return SchemeOutput(images=self.decode_image(z_hat) if decode else None,
                            symbols=self.symbols, z_hat=z_hat, info=info)
