"""A real channel code for the digital baseline: Sionna's 5G NR LDPC + QAM over the project's
channel conventions, with a table of modulation-and-coding schemes (MCS) and their measured
thresholds (the SNR at which the codeword error rate reaches 10%) on AWGN and on fading channels,
and the mutual-information effective SNR of a codeword whose gains a transmitter knows.

::

    bits (B, K) --[CRC]--> LDPC5GEncoder (one or more codewords) --channel interleaver--> QAM
    Mapper --> symbols // 2 complex symbols --> y = h_b x + n --> equalise (perfect CSI) -->
    Demapper (app LLRs) --deinterleave--> LDPC5GDecoder (BP) --> bits_hat

Conventions (DESIGN.md, :mod:`meg_lightning.channels`): a complex QAM symbol is one channel use,
two real symbols; the noise variance per real symbol is 10^(-SNR/10) at unit power per real
symbol (Sionna's ``no = 2 sigma^2`` at Es = 2), i.e. Es/N0 = SNR per QAM symbol. Fading: the
cell's channel draws the gains (:meth:`~meg_lightning.channels.Channel.draw_gains`), each gain
group a run of consecutive QAM symbols (:func:`block_sizes`); perfect CSI at the receiver, zero
forcing (the demapper sees ``y / h`` with noise ``sigma^2 / |h|^2``); the transmitter has no CSI
unless it passes the gains it drew (``h``). Every random draw comes from the ``generator`` passed
in.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from meg_lightning.channels import CHANNELS
from meg_lightning.schemes.base import link_snr

log = logging.getLogger(__name__)


def block_sizes(n: int, num_blocks: int) -> list[int]:
    """Symbols per fading block when n symbols are cut into num_blocks nearly equal blocks."""
    if num_blocks <= 0:
        raise ValueError(f"num_blocks must be a positive integer, got {num_blocks!r}")
    return [n // num_blocks + (1 if b < n % num_blocks else 0) for b in range(num_blocks)]


# ============================================================================ MCS table


@dataclass(frozen=True)
class MCS:
    """One modulation and coding scheme: QAM with ``bits_per_symbol`` bits, LDPC code rate."""

    index: int
    name: str
    bits_per_symbol: int
    rate: float

    @property
    def spectral_efficiency(self) -> float:
        """Information bits per complex channel use (per QAM symbol)."""
        return self.bits_per_symbol * self.rate


#: The MCSs, by increasing spectral efficiency (0.4 .. 5 bits per complex channel use). The code
#: rates are within Sionna's 5G LDPC range [1/5, 0.95].
MCS_TABLE: tuple[MCS, ...] = (
    MCS(0, "QPSK 1/5", 2, 1 / 5),
    MCS(1, "QPSK 1/3", 2, 1 / 3),
    MCS(2, "QPSK 1/2", 2, 1 / 2),
    MCS(3, "QPSK 2/3", 2, 2 / 3),
    MCS(4, "16QAM 1/2", 4, 1 / 2),
    MCS(5, "16QAM 2/3", 4, 2 / 3),
    MCS(6, "16QAM 3/4", 4, 3 / 4),
    MCS(7, "64QAM 2/3", 6, 2 / 3),
    MCS(8, "64QAM 3/4", 6, 3 / 4),
    MCS(9, "64QAM 5/6", 6, 5 / 6),
)

#: Required AWGN SNR (dB, per real symbol = Es/N0 per QAM symbol) for a codeword error rate
#: <= 10%, per number of QAM symbols per image (key) and MCS index (columns: :data:`MCS_TABLE`
#: order), for ``num_iter = 20`` and this module's code layout (:class:`LdpcLink`). None: the MCS
#: does not fit that budget. Measured with :func:`measure_threshold_db` (bisection on a 0.1 dB grid,
#: 400 codewords per point (347 for n = 576), the same bits and noise at every point, seed 0;
#: ``python benchmarks/bench_digital.py --thresholds 64 32 96``). The budgets are the mini model's fc 0.25 / 0.5 / 0.75 (|z| = 256 -> 64 / 128 / 192
#: real symbols -> 32 / 64 / 96 QAM symbols). Their Shannon limits (log2(1 + SNR) = bits per QAM
#: symbol) are -5.0, -2.3, 0.0, 1.8, 4.8, 7.3, 8.5, 11.8, 13.4, 14.9 dB: these short codes
#: (n = 64..576 bits) sit 2-4 dB above them. 4096 QAM symbols is the paper's |z| = 16384 at
#: fc 0.5 (1-3 codewords of n = 8190..16384 bits, 48 codewords per point; ``--thresholds
#: 4096``): 1.2-2.3 dB above Shannon (BICM, 20 flooding iterations). Other
#: budgets are simulated on first use and cached in memory (:func:`required_snr_db`): seconds
#: for mini budgets, tens of minutes per budget at paper scale on a CPU.
MEASURED_THRESHOLDS_DB: dict[int, tuple[Optional[float], ...]] = {
    #     QPSK 1/5  1/3   1/2  2/3  16QAM 1/2  2/3   3/4  64QAM 2/3  3/4   5/6
    32: (-1.0, 0.7, 2.7, 4.3, 7.9, 10.0, 11.4, 14.9, 16.8, 18.5),
    64: (-1.7, 0.3, 2.2, 4.0, 7.3, 9.9, 11.2, 14.8, 16.1, 17.8),
    96: (-2.2, -0.2, 2.1, 4.0, 7.2, 9.6, 10.8, 14.6, 16.1, 17.6),
    4096: (-3.7, -1.0, 1.2, 3.3, 6.4, 9.1, 10.3, 14.1, 15.6, 17.1),
}

#: The codeword error rate at which every MCS threshold is measured (AWGN and fading): the
#: automatic MCS choice keeps the codeword error rate at or below it wherever some MCS can.
TARGET_BLER = 0.1

#: LDPC limits of Sionna's 5G encoder (38.212): information bits per codeword, code rate.
K_MIN, K_MAX = 12, 8448
RATE_MIN, RATE_MAX = 1 / 5, 0.95


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def _info_bits(rate: float, n: int) -> int:
    """k = round(rate * n), kept inside Sionna's rate range [1/5, 0.95] (QPSK 1/5 rounds down
    to a rate just below 1/5 for some n)."""
    return min(max(_round_half_up(rate * n), -(-n // 5)), (95 * n) // 100)  # exact integer bounds


def code_layout(n_complex: int, mcs: MCS, crc_length: int = 0) -> Optional[list[tuple[int, int, int]]]:
    """The codewords of one image: a list of ``(qam_symbols, n, k)`` per codeword, or None when
    the MCS does not fit the budget.

    The ``n_complex`` QAM symbols carry ``n_complex * bits_per_symbol`` coded bits; they are split
    into the fewest codewords whose k (CRC included) is <= 8448, each codeword a whole number of QAM
    symbols (:func:`block_sizes`), with ``n_c = symbols_c * bits_per_symbol`` and
    ``k_c = round(rate * n_c)`` (kept in [n_c / 5, 0.95 n_c]). None if a codeword would have ``k_c - crc_length < 1`` or
    ``k_c < 12`` or a rate outside [1/5, 0.95] (too short a budget for this MCS).
    """
    if n_complex < 1:
        return None
    total_k = mcs.rate * n_complex * mcs.bits_per_symbol
    num_cw = max(1, math.ceil(total_k / K_MAX))
    while True:
        sizes = block_sizes(n_complex, num_cw)
        layout = [(s, s * mcs.bits_per_symbol, _info_bits(mcs.rate, s * mcs.bits_per_symbol))
                  for s in sizes]
        if max(k for _, _, k in layout) <= K_MAX:
            break
        num_cw += 1
    for s, n, k in layout:
        if s < 1 or k < K_MIN or k - crc_length < 1 or not RATE_MIN <= k / n <= RATE_MAX:
            return None
    return layout


# ============================================================================ the LDPC link


def _randn(shape: Sequence[int], generator: Optional[torch.Generator], device: torch.device) -> Tensor:
    """Standard normals on ``device`` drawn from ``generator`` on its own device."""
    if generator is None or generator.device == device:
        return torch.randn(*shape, generator=generator, device=device)
    return torch.randn(*shape, generator=generator, device=generator.device).to(device)


@dataclass
class LinkOutput:
    bits_hat: Tensor  # (batch, K) the UE's information bits
    erased: Tensor  # (batch, K) bool: bits of a codeword the UE detects as failed
    codeword_error: Tensor  # (batch, num_codewords) bool: decoded bits != sent bits
    detected_failure: Tensor  # (batch, num_codewords) bool


class LdpcLink:
    """One image's bits over ``n_complex`` QAM symbols with an MCS: 5G LDPC + QAM via Sionna.

    ::

        bits (batch, K) -> split into codewords -> [CRCEncoder] -> LDPC5GEncoder(k_c, n_c)
          -> concatenate -> fixed pseudo-random channel interleaver over all coded bits
          -> Mapper(qam) -> channel -> equalise -> Demapper(app, no per symbol)
          -> deinterleave -> LDPC5GDecoder(num_iter) -> [CRCDecoder] -> bits_hat

    The interleaver (a fixed permutation, seed 0) spreads every codeword over all fading blocks
    and bit levels; on AWGN it changes nothing. Failure detection: with ``crc`` (a Sionna CRC
    name: CRC6, CRC11, CRC16, CRC24A, ...) each codeword carries that CRC inside its k bits and a
    CRC mismatch marks the codeword failed; with ``crc=None`` the simulation compares with the
    sent bits (ideal error detection, the usual link-level assumption, at no rate cost). The bits
    of a detected failure are marked erased (the quantiser then uses the mean for the affected
    components); an undetected error (CRC passes on wrong bits) goes to the quantiser as is.
    """

    def __init__(self, n_complex: int, mcs: MCS, *, num_iter: int = 20, crc: Optional[str] = None,
                 device: torch.device | str = "cpu"):
        # Sionna is heavy (seconds to import): imported when a digital link is first built
        from sionna.phy.fec.ldpc import LDPC5GDecoder, LDPC5GEncoder  # noqa: PLC0415
        from sionna.phy.mapping import Demapper, Mapper  # noqa: PLC0415

        self.n_complex, self.mcs, self.num_iter, self.crc = int(n_complex), mcs, int(num_iter), crc
        self.device = torch.device(device)
        dev = str(self.device)
        self.crc_length = 0
        if crc is not None:
            from sionna.phy.fec.crc import CRCEncoder  # noqa: PLC0415

            self.crc_length = CRCEncoder(crc, device=dev).crc_length
        layout = code_layout(self.n_complex, mcs, self.crc_length)
        if layout is None:
            raise ValueError(f"MCS {mcs.name} does not fit {self.n_complex} QAM symbols "
                             f"(needs k >= {K_MIN} info bits per codeword)")
        self.layout = layout
        self.k_cw = [k - self.crc_length for _, _, k in layout]  # quantiser bits per codeword
        self.info_bits = sum(self.k_cw)
        self.coded_bits = sum(n for _, n, _ in layout)
        self.codes: dict[tuple[int, int], tuple] = {}
        for _, n, k in layout:
            if (k, n) not in self.codes:
                enc = LDPC5GEncoder(k, n, device=dev)
                dec = LDPC5GDecoder(enc, num_iter=self.num_iter, hard_out=True,
                                    return_infobits=True, device=dev)
                crc_pair = None
                if crc is not None:
                    from sionna.phy.fec.crc import CRCDecoder, CRCEncoder  # noqa: PLC0415

                    crc_enc = CRCEncoder(crc, k=k - self.crc_length, device=dev)
                    crc_pair = (crc_enc, CRCDecoder(crc_enc, device=dev))
                self.codes[(k, n)] = (enc, dec, crc_pair)
        self.mapper = Mapper("qam", mcs.bits_per_symbol, device=dev)
        self.demapper = Demapper("app", "qam", mcs.bits_per_symbol, device=dev)
        perm_gen = torch.Generator().manual_seed(0)
        self.perm = torch.randperm(self.coded_bits, generator=perm_gen).to(self.device)
        self.perm_inv = torch.argsort(self.perm)

    @property
    def num_codewords(self) -> int:
        return len(self.layout)

    @property
    def real_symbols(self) -> int:
        """Real channel symbols used per image (two per QAM symbol)."""
        return 2 * self.n_complex

    def _groups(self):
        """Codeword indices grouped by their (k, n): each group is one batched encoder call."""
        groups: dict[tuple[int, int], list[int]] = {}
        for c, (_, n, k) in enumerate(self.layout):
            groups.setdefault((k, n), []).append(c)
        return groups

    @torch.no_grad()
    def encode(self, bits: Tensor) -> Tensor:
        """bits (batch, K) -> complex QAM symbols (batch, n_complex), Es = 1."""
        batch = bits.shape[0]
        info = torch.split(bits.to(self.device, torch.float32), self.k_cw, dim=1)
        coded: list[Optional[Tensor]] = [None] * self.num_codewords
        for (k, n), idx in self._groups().items():
            enc, _, crc_pair = self.codes[(k, n)]
            u = torch.stack([info[c] for c in idx], 1).reshape(batch * len(idx), -1)
            if crc_pair is not None:
                u = crc_pair[0](u)
            cw = enc(u).reshape(batch, len(idx), n)
            for j, c in enumerate(idx):
                coded[c] = cw[:, j]
        c_all = torch.cat(coded, dim=1)[:, self.perm]  # (batch, coded_bits) interleaved
        return self.mapper(c_all)  # (batch, n_complex)

    @torch.no_grad()
    def decode(self, llr: Tensor) -> tuple[Tensor, Optional[Tensor]]:
        """LLRs (batch, coded_bits) -> (info bits (batch, K), crc_ok (batch, C) or None)."""
        batch = llr.shape[0]
        llr = llr[:, self.perm_inv]
        pieces = torch.split(llr, [n for _, n, _ in self.layout], dim=1)
        out: list[Optional[Tensor]] = [None] * self.num_codewords
        ok = torch.ones(batch, self.num_codewords, dtype=torch.bool, device=llr.device)
        for (k, n), idx in self._groups().items():
            _, dec, crc_pair = self.codes[(k, n)]
            u_hat = dec(torch.stack([pieces[c] for c in idx], 1).reshape(batch * len(idx), n))
            if crc_pair is not None:
                u_hat, valid = crc_pair[1](u_hat)
                ok[:, idx] = valid.reshape(batch, len(idx))
            u_hat = u_hat.reshape(batch, len(idx), -1)
            for j, c in enumerate(idx):
                out[c] = u_hat[:, j]
        return torch.cat(out, dim=1), (ok if self.crc is not None else None)

    @torch.no_grad()
    def channel(self, x: Tensor, *, channel, generator: Optional[torch.Generator] = None,
                h: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        """QAM symbols x (batch, n_complex), Es = 1 -> (equalised y, noise variance per symbol
        (batch, n_complex)), what the demapper sees, over ``channel`` (a
        :class:`~meg_lightning.channels.Channel`: its SNR and gains). Draws the gains (fading
        channels; or takes ``h`` (batch, groups), drawn before by a transmitter that knows
        them), then the noise."""
        batch = x.shape[0]
        snr_db = link_snr(channel)
        if snr_db is None:
            # no noise: the LLRs only need the right signs (the demapper floors `no` anyway)
            return x, torch.full((batch, self.n_complex), 1e-6, device=self.device)
        sigma2 = 10.0 ** (-float(snr_db) / 10.0)  # noise per real symbol at unit real power
        if channel.fading:
            if h is not None:
                groups = channel.groups(self.n_complex)
                if h.shape != (batch, groups) or not h.is_complex():
                    raise ValueError(f"h must be complex with shape {(batch, groups)}, got "
                                     f"{h.dtype} {tuple(h.shape)}")
                hb = h.to(device=self.device, dtype=torch.complex64)
            else:
                hb = channel.draw_gains(batch, self.n_complex, generator,
                                        torch.empty(0, device=self.device))  # (batch, groups)
            sizes = torch.tensor(block_sizes(self.n_complex, hb.shape[1]), device=self.device)
            h = torch.repeat_interleave(hb, sizes, dim=1)  # (batch, n_complex)
        w = _randn((batch, self.n_complex, 2), generator, self.device) * math.sqrt(sigma2 / 2)
        n = torch.complex(w[..., 0], w[..., 1])  # CN(0, sigma^2): Es/N0 = 1 / sigma^2 = SNR
        if channel.fading:
            y = (h * x + n) / h  # zero forcing with perfect CSI at the UE
            return y, sigma2 / h.abs().pow(2).clamp_min(1e-30)  # noise variance after equalising
        return x + n, torch.full((batch, self.n_complex), sigma2, device=self.device)

    @torch.no_grad()
    def transmit(self, bits: Tensor, *, channel, generator: Optional[torch.Generator] = None,
                 h: Optional[Tensor] = None) -> LinkOutput:
        """Send bits (batch, K) over ``channel`` (the noiseless channel: no noise); see the module
        docstring for the conventions. ``h``: the fading gains (batch, groups) if already drawn
        (a transmitter with CSI), else the channel draws them from ``generator``."""
        if bits.dim() != 2 or bits.shape[1] != self.info_bits:
            raise ValueError(f"bits must have shape (batch, {self.info_bits}), got {tuple(bits.shape)}")
        x = self.encode(bits)  # (batch, n_complex) complex, Es = 1
        y, no = self.channel(x, channel=channel, generator=generator, h=h)
        return self.receive(y, no, bits)

    @torch.no_grad()
    def receive(self, y: Tensor, no: Tensor, bits: Tensor) -> LinkOutput:
        """The UE's half: equalised QAM symbols ``y`` (batch, n_complex) with noise variance
        ``no`` per symbol -> demapper -> LDPC decoder -> :class:`LinkOutput`; ``bits`` (batch, K)
        are the sent bits (the codeword errors, and the failure detection without a CRC)."""
        llr = self.demapper(y, no)  # (batch, coded_bits)
        bits_hat, crc_ok = self.decode(llr)
        sent = bits.to(bits_hat.device)
        wrong = torch.stack([(b1 != b0).any(1) for b1, b0 in
                             zip(torch.split(bits_hat, self.k_cw, 1), torch.split(sent, self.k_cw, 1))], 1)
        failed = wrong if crc_ok is None else ~crc_ok  # (batch, C)
        erased = torch.repeat_interleave(failed, torch.tensor(self.k_cw, device=failed.device), dim=1)
        return LinkOutput(bits_hat=bits_hat, erased=erased, codeword_error=wrong,
                          detected_failure=failed)


# ============================================================================ MCS thresholds

_THRESHOLD_CACHE: dict[tuple[int, int, int], Optional[float]] = {}


def shannon_snr_db(spectral_efficiency: float) -> float:
    """AWGN SNR (dB) at which log2(1 + SNR) equals ``spectral_efficiency`` bits per complex use."""
    return 10 * math.log10(2 ** spectral_efficiency - 1)


def codeword_error_rate(link: LdpcLink, snr_db: float, num_codewords: int, seed: int = 0,
                        channel=None) -> float:
    """Fraction of codewords in error at ``snr_db`` (random bits, fixed seed: the same bits and
    noise (and fading) realisations at every SNR, so that the curve is monotone in practice), on
    AWGN or, given ``channel``, on that channel model (its kind, blocks and settings) at
    ``snr_db``."""
    batch = max(1, math.ceil(num_codewords / link.num_codewords))
    gen = torch.Generator(device=link.device).manual_seed(seed)
    bits = torch.randint(0, 2, (batch, link.info_bits), generator=gen, device=link.device).float()
    ch = CHANNELS["awgn"](snr_db=snr_db) if channel is None else channel.replace(snr_db=snr_db)
    out = link.transmit(bits, channel=ch, generator=gen)
    return float(out.codeword_error.float().mean())


def measure_threshold_db(n_complex: int, mcs: MCS | int, *, num_iter: int = 20,
                         target: float = TARGET_BLER, num_codewords: Optional[int] = None,
                         resolution_db: float = 0.1, seed: int = 0,
                         channel=None) -> Optional[float]:
    """The smallest SNR (dB, on a ``resolution_db`` grid) with codeword error rate <= ``target``
    for ``mcs`` on ``n_complex`` QAM symbols, on AWGN (or on ``channel``'s model: its average
    SNR), or None if the MCS does not fit.

    Bisection between the Shannon limit of the MCS's spectral efficiency (where a finite-length
    code always fails) and 12 dB above it (moved up in 6 dB steps while the upper end fails), each
    point simulated with the same bits and noise (:func:`codeword_error_rate`). ``num_codewords``
    defaults to 400 for short codes, fewer for long ones (whose waterfall is steeper):
    ``clip(200000 // n, 48, 400)``.
    """
    mcs = MCS_TABLE[mcs] if isinstance(mcs, int) else mcs
    if code_layout(n_complex, mcs) is None:
        return None
    link = LdpcLink(n_complex, mcs, num_iter=num_iter)
    if num_codewords is None:
        n_max = max(n for _, n, _ in link.layout)
        num_codewords = int(np.clip(200000 // n_max, 48, 400))
    q = lambda s: round(s / resolution_db) * resolution_db
    lo = q(shannon_snr_db(mcs.spectral_efficiency)) - resolution_db
    hi = lo + 12.0
    while codeword_error_rate(link, hi, num_codewords, seed, channel) > target:
        lo, hi = hi, hi + 6.0
        if hi > 60:
            raise RuntimeError(f"{mcs.name} on {n_complex} QAM symbols: no SNR up to 60 dB "
                               f"reaches codeword error rate {target}")
    while hi - lo > resolution_db * 1.5:
        mid = q((lo + hi) / 2)
        if codeword_error_rate(link, mid, num_codewords, seed, channel) <= target:
            hi = mid
        else:
            lo = mid
    return round(hi, 6)


#: Codewords simulated per SNR point and SNR grid (dB) of a threshold measured on a fading channel
#: (:func:`fading_threshold_db`): a block-fading error rate falls slowly with the SNR (about 10x
#: per 10 dB on one Rayleigh block), so the grid is coarser than on AWGN; 500 codewords estimate
#: 10% to +-1.3% (one standard error), about +-0.6 dB on one Rayleigh block.
FADING_CODEWORDS = 500
FADING_RESOLUTION_DB = 0.5

#: Required AVERAGE SNR (dB) for a codeword error rate <= 10% on a fading channel, per
#: ``(channel kind, gain groups per image, QAM symbols per image)`` and MCS index (columns:
#: :data:`MCS_TABLE` order; None: the MCS does not fit), for ``num_iter = 20``. Measured with
#: :func:`measure_threshold_db` on that channel model (the same bits, gains and noise at every
#: point, seed 0; :data:`FADING_CODEWORDS` codewords, :data:`FADING_RESOLUTION_DB` grid) by
#: ``python benchmarks/digital_fading_thresholds.py 32 64 96 --blocks 1``. The keys are the mini
#: model's budgets (fc 0.25 / 0.5 / 0.75) on Rayleigh block fading with one block per image (the
#: demo and ``make eval-channels``). Other channels and budgets are measured on first use and cached
#: in memory (:func:`fading_threshold_db`).
FADING_THRESHOLDS_DB: dict[tuple[str, int, int], tuple[Optional[float], ...]] = {
    #               QPSK 1/5  1/3   1/2   2/3  16QAM 1/2  2/3   3/4  64QAM 2/3  3/4   5/6
    ("rayleigh", 1, 32): (7.0, 9.5, 11.0, 12.5, 17.0, 18.5, 21.5, 24.0, 25.5, 27.0),
    ("rayleigh", 1, 64): (7.0, 8.5, 11.5, 13.0, 16.5, 19.0, 20.5, 24.5, 25.5, 27.5),
    ("rayleigh", 1, 96): (7.5, 9.0, 12.5, 13.5, 16.5, 19.5, 20.5, 24.0, 26.5, 27.5),
}
_FADING_CACHE: dict[tuple, Optional[float]] = {}


def fading_key(channel, n_complex: int) -> tuple:
    """What a fading threshold depends on: the channel model, its own settings, its gain groups
    over ``n_complex`` QAM symbols (Rayleigh: ``num_blocks``) and the budget. Not the SNR, the
    power blocks' powers or the equaliser (the link always equalises by zero forcing)."""
    return (channel.kind, repr(channel.settings), int(channel.groups(n_complex)), int(n_complex))


def fading_threshold_db(n_complex: int, mcs: MCS | int, channel, num_iter: int = 20,
                        measure: bool = True) -> Optional[float]:
    """Required average SNR (dB) for codeword error rate <= 10% for ``mcs`` on ``n_complex`` QAM
    symbols over the fading ``channel``'s model (its kind, settings and gain groups):
    :data:`FADING_THRESHOLDS_DB` when it has the entry, else simulated once
    (:func:`measure_threshold_db` on the channel, :data:`FADING_CODEWORDS` codewords per point on
    a :data:`FADING_RESOLUTION_DB` grid; tens of seconds per MCS for mini budgets on one core)
    and cached in memory. None: the MCS does not fit. ``measure=False``: only the table and the
    cache (None when neither has it)."""
    idx = mcs if isinstance(mcs, int) else mcs.index
    kind, settings, groups, n = fading_key(channel, n_complex)
    shipped = FADING_THRESHOLDS_DB.get((kind, groups, n))
    if num_iter == 20 and shipped is not None and settings == repr(type(channel)().settings):
        return shipped[idx]
    key = (kind, settings, groups, n, idx, int(num_iter))
    if key not in _FADING_CACHE:
        if not measure:
            return None
        if code_layout(n, MCS_TABLE[idx]) is None:
            return None
        log.warning("simulating the %s threshold of %s on %d QAM symbols (%d gain groups; not "
                    "in FADING_THRESHOLDS_DB; cached for this process)", kind,
                    MCS_TABLE[idx].name, n, groups)
        _FADING_CACHE[key] = measure_threshold_db(
            n, idx, num_iter=num_iter, num_codewords=FADING_CODEWORDS,
            resolution_db=FADING_RESOLUTION_DB, channel=channel)
    return _FADING_CACHE[key]


def required_snr_db(n_complex: int, mcs: MCS | int, num_iter: int = 20) -> Optional[float]:
    """Required AWGN SNR (dB) for codeword error rate <= 10%: :data:`MEASURED_THRESHOLDS_DB` when
    it has the budget (for ``num_iter = 20``), else simulated once (:func:`measure_threshold_db`)
    and cached in memory per (n_complex, MCS, num_iter). None: the MCS does not fit."""
    idx = mcs if isinstance(mcs, int) else mcs.index
    if num_iter == 20 and n_complex in MEASURED_THRESHOLDS_DB:
        return MEASURED_THRESHOLDS_DB[n_complex][idx]
    key = (int(n_complex), idx, int(num_iter))
    if key not in _THRESHOLD_CACHE:
        log.warning("simulating the AWGN threshold of %s on %d QAM symbols (not in "
                    "MEASURED_THRESHOLDS_DB; cached for this process)", MCS_TABLE[idx].name,
                    n_complex)
        _THRESHOLD_CACHE[key] = measure_threshold_db(n_complex, idx, num_iter=num_iter)
    return _THRESHOLD_CACHE[key]


# ============================================================================ CSI at the transmitter: link abstraction

#: SNR grid (dB, Es/N0 per QAM symbol) of the tabulated BICM mutual information
MI_GRID_DB = np.arange(-30.0, 50.0 + 1e-9, 0.25)
_MI_TABLE: dict[int, np.ndarray] = {}


def qam_points(bits_per_symbol: int) -> tuple[np.ndarray, np.ndarray]:
    """The 5G NR QAM constellation (38.211 Sec. 5.1, Sionna's ``Constellation("qam", m)``, unit
    energy): (points (2^m,) complex, labels (2^m, m) bits, MSB first, point i labelled by i).
    Bits 0, 2, 4, ... set the real part, 1, 3, 5, ... the imaginary part (Gray in each)."""
    m = int(bits_per_symbol)
    if m < 2 or m % 2:
        raise ValueError(f"bits_per_symbol must be an even integer >= 2, got {bits_per_symbol!r}")
    labels = (np.arange(2 ** m)[:, None] >> np.arange(m - 1, -1, -1)) & 1  # (2^m, m)
    k = m // 2

    def pam(b: np.ndarray) -> np.ndarray:  # (2^m, k) bits of one dimension -> amplitudes
        s = 1.0 - 2.0 * b
        v = np.ones(len(b))
        for j in range(k - 1, 0, -1):
            v = 2.0 ** (k - j) - s[:, j] * v
        return s[:, 0] * v

    pts = pam(labels[:, 0::2]) + 1j * pam(labels[:, 1::2])
    return pts / np.sqrt(np.mean(np.abs(pts) ** 2)), labels


def _logsumexp(a: np.ndarray, axis: int) -> np.ndarray:
    top = np.max(a, axis=axis, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    return np.log(np.sum(np.exp(a - top), axis=axis)) + np.squeeze(top, axis)


def _bicm_table(bits_per_symbol: int, nodes: int = 64) -> np.ndarray:
    """BICM mutual information (bits per QAM symbol) of 5G QAM on AWGN at :data:`MI_GRID_DB`,
    exact up to quadrature: a square QAM with this labelling is two independent PAMs (real part:
    the even bits, imaginary part: the odd bits), so I_QAM = 2 I_PAM, each PAM's bit-wise mutual
    information computed with ``nodes``-point Gauss-Hermite quadrature over the noise
    (N(0, N0/2) per dimension, N0 = 10^(-SNR/10) at Es = 1). Cached per modulation."""
    m = int(bits_per_symbol)
    if m not in _MI_TABLE:
        pts, labels = qam_points(m)
        k = m // 2
        re_bits = labels[:, 0::2]
        idx = re_bits @ (1 << np.arange(k - 1, -1, -1))
        a = np.zeros(2 ** k)
        b = np.zeros((2 ** k, k), dtype=int)
        a[idx], b[idx] = pts.real, re_bits  # the PAM: amplitude and label of each level
        t, w = np.polynomial.hermite.hermgauss(nodes)
        w = w / math.sqrt(math.pi)
        n0 = 10.0 ** (-MI_GRID_DB / 10.0)  # (S,)
        y = a[None, :, None] + np.sqrt(n0)[:, None, None] * t  # (S, A sent, N)
        d = -((y[..., None] - a) ** 2) / n0[:, None, None, None]  # (S, A, N, A cand): log p(y|a')
        tot = _logsumexp(d, -1)
        loss = np.zeros(len(n0))
        for i in range(k):
            same = b[:, i][:, None] == b[:, i][None, :]  # (A sent, A cand): same bit i
            num = _logsumexp(np.where(same[None, :, None, :], d, -np.inf), -1)
            loss += ((tot - num) * w).sum(-1).mean(-1)
        mi = 2.0 * (k - loss / math.log(2.0))
        _MI_TABLE[m] = np.maximum.accumulate(np.clip(mi, 0.0, m))  # monotone (quadrature noise)
    return _MI_TABLE[m]


def bicm_mi(bits_per_symbol: int, snr_db) -> np.ndarray:
    """BICM mutual information (bits per QAM symbol, in [0, m]) of 5G QAM with ``bits_per_symbol``
    bits on AWGN at ``snr_db`` (Es/N0 per QAM symbol; array-like), interpolated in dB on
    :data:`MI_GRID_DB` (clamped at its ends)."""
    return np.interp(np.asarray(snr_db, dtype=np.float64), MI_GRID_DB, _bicm_table(bits_per_symbol))


def effective_mi(power_gains, sizes: Sequence[int], snr_db: float, bits_per_symbol: int) -> np.ndarray:
    """Mean BICM mutual information per QAM symbol of a codeword spread over gain groups:
    ``sum_g n_g I_m(SNR |h_g|^2) / sum_g n_g`` for power gains ``|h_g|^2`` (..., groups) and
    ``sizes`` QAM symbols per group, at average ``snr_db``. The mutual-information effective SNR
    mapping (MIESM) of link-level abstraction: a BICM code decodes a fading codeword about when it
    decodes an AWGN codeword of the same mean mutual information."""
    g = np.asarray(power_gains.cpu() if isinstance(power_gains, Tensor) else power_gains,
                   dtype=np.float64)
    n = np.asarray(sizes, dtype=np.float64)
    inst_db = float(snr_db) + 10.0 * np.log10(np.maximum(g, 1e-30))
    return (bicm_mi(bits_per_symbol, inst_db) * n).sum(-1) / n.sum()


def supports(mcs: MCS | int, threshold_db: float, power_gains, sizes: Sequence[int],
             snr_db: float) -> np.ndarray:
    """Whether each fading realisation (power gains (..., groups)) supports ``mcs`` with required
    AWGN SNR ``threshold_db``: its effective mutual information (:func:`effective_mi`) is at least
    the MCS's at the threshold. One gain group: exactly ``SNR |h|^2 >= threshold``."""
    mcs = MCS_TABLE[mcs] if isinstance(mcs, int) else mcs
    need = float(bicm_mi(mcs.bits_per_symbol, threshold_db))
    return effective_mi(power_gains, sizes, snr_db, mcs.bits_per_symbol) >= need - 1e-12
