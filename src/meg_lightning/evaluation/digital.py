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

import functools
import logging
import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from meg_lightning.evaluation.schemes import SchemeOutput, awgn_capacity_bits, block_sizes

log = logging.getLogger(__name__)

KINDS = ("awgn", "rayleigh", "none")

# ============================================================================ the quantiser

#: Most bits one KLT component can get (a 65536-level quantiser; ~1e-9 of the variance left).
MAX_BITS_PER_COMPONENT = 16


def _gaussian_cell_mse(step: float, levels: int) -> float:
    """MSE of the midrise uniform quantiser with ``levels`` levels and ``step`` on N(0, 1).

    Thresholds at ``(j - L/2) step`` for j = 1..L-1, reconstruction at the cell midpoints
    ``(j - L/2 + 1/2) step``; the two outer cells extend to -inf / +inf (overload). Exact, from
    the Gaussian partial moments: int_a^b (x - c)^2 phi = (1 + c^2) dPhi - [x phi]_a^b
    - 2 c (phi(a) - phi(b)).
    """
    from scipy.special import ndtr

    j = np.arange(levels // 2, dtype=np.float64)  # the upper half; the MSE is symmetric
    last = j == levels // 2 - 1  # the overload cell [a, inf)
    a, b = j * step, np.where(last, 0.0, (j + 1) * step)  # b is a placeholder in the last cell
    c = (j + 0.5) * step
    pdf_a = np.exp(-0.5 * a ** 2) / math.sqrt(2 * math.pi)
    pdf_b = np.where(last, 0.0, np.exp(-0.5 * b ** 2) / math.sqrt(2 * math.pi))  # phi(inf) = 0
    cdf_b = np.where(last, 1.0, ndtr(b))
    cells = (1 + c ** 2) * (cdf_b - ndtr(a)) - (b * pdf_b - a * pdf_a) - 2 * c * (pdf_a - pdf_b)
    return float(2 * cells.sum())


@functools.lru_cache(maxsize=None)
def gaussian_uniform_quantizer_table(max_bits: int = MAX_BITS_PER_COMPONENT
                                     ) -> tuple[np.ndarray, np.ndarray]:
    """``(steps, mse)``, each (max_bits + 1,): the MSE-optimal step of a uniform b-bit quantiser
    of N(0, 1) and its MSE, for b = 0..max_bits (b = 0: no step, MSE 1, the mean).

    Found by a bounded scalar search on the exact MSE (:func:`_gaussian_cell_mse`). Checks: b = 1
    gives step 1.596 and MSE 1 - 2/pi = 0.3634, b = 2 step 0.996 and MSE 0.1188 (Max 1960).
    """
    from scipy.optimize import minimize_scalar

    steps, mse = [0.0], [1.0]
    for b in range(1, max_bits + 1):
        levels = 2 ** b
        hi = 4.0 * 2.0 / levels * (1 + b)  # generously above the optimum (~ 2 * 4 sqrt(b) / L)
        res = minimize_scalar(lambda s: _gaussian_cell_mse(s, levels), bounds=(hi * 1e-3, hi),
                              method="bounded", options={"xatol": hi * 1e-7})
        steps.append(float(res.x))
        mse.append(float(res.fun))
    return np.asarray(steps), np.asarray(mse)


class LatentQuantizer:
    """Fixed-rate transform coder of latents: KLT, greedy bit allocation, uniform scalar quantisers.

    Fitted on training latents ``z_train`` (N, C, h, w):

    - **KLT.** Mean ``mu`` and the principal directions of the centred data (thin SVD, so
      |z| = 16384 with a few hundred latents is cheap); ``r = min(N, |z|)`` components with sample
      variances ``lambda_1 >= ... >= lambda_r``; eigenvector signs fixed (largest entry positive)
      so the code does not depend on the SVD routine's sign choice.
    - **Bit allocation** for a total of B bits: component i gets ``b_i`` bits with sum b_i = B,
      chosen greedily by marginal return, i.e. the next bit goes to the component whose modelled
      distortion ``lambda_i d(b_i)`` drops most. Since d(b) is convex in b, the greedy choice is
      the optimal integer allocation (the discrete version of reverse water-filling). Ties go to
      the lower component index. At most :data:`MAX_BITS_PER_COMPONENT` bits per component;
      bits beyond ``r * MAX_BITS_PER_COMPONENT`` are padding (sent, ignored).
    - **Scalar quantisers.** Component i with b_i > 0 bits: midrise uniform quantiser with
      ``2^b_i`` levels and step ``sqrt(lambda_i) * s(b_i)``, s(b) the MSE-optimal step for a
      unit Gaussian (:func:`gaussian_uniform_quantizer_table`). Uniform, not Lloyd-Max: simpler,
      and its MSE is 0 / 0.05 / 0.35 / 0.85 / 1.5 / 2.1 dB above Lloyd-Max's at 1 / 2 / 3 / 4 /
      5 / 6 bits (the mini budgets give the leading components 1-4 bits). Components with 0 bits are reconstructed as
      the mean (coefficient 0).
    - **Bits.** Component by component (in descending variance), each index in natural binary,
      most significant bit first. ``quantise(z, B) -> (batch, B)`` float tensor of 0/1;
      ``dequantise(bits, B) -> z_hat`` (batch, C, h, w). Any bit pattern decodes (all indices are
      valid), and components with an *erased* bit (a failed codeword) fall back to the mean.

    Deterministic (float64 inside). :meth:`expected_mse` is the modelled MSE per latent entry for
    Gaussian latents (exact for Gaussian components, up to the sample covariance).
    """

    def __init__(self, z_train: Tensor, max_bits: int = MAX_BITS_PER_COMPONENT):
        if z_train.dim() < 2 or z_train.shape[0] < 2:
            raise ValueError(f"z_train must have shape (N, ...) with N >= 2 latents, got "
                             f"{tuple(z_train.shape)}")
        if not 1 <= int(max_bits) <= 24:
            raise ValueError(f"max_bits must be in [1, 24], got {max_bits!r}")
        self.latent_shape = tuple(z_train.shape[1:])
        self.max_bits = int(max_bits)
        zf = z_train.detach().reshape(z_train.shape[0], -1).double().cpu()  # (N, |z|)
        self.numel = zf.shape[1]
        self.mean = zf.mean(0)  # (|z|,)
        zc = zf - self.mean
        _, s, vh = torch.linalg.svd(zc, full_matrices=False)  # s descending, vh (r, |z|)
        vecs = vh.T.contiguous()  # (|z|, r)
        flip = torch.sign(vecs.gather(0, vecs.abs().argmax(0, keepdim=True)))  # (1, r)
        self.eigvecs = vecs * torch.where(flip == 0, torch.ones_like(flip), flip)
        self.eigvals = s.pow(2) / (zf.shape[0] - 1)  # (r,) descending
        self.total_var = float(zc.pow(2).sum() / (zf.shape[0] - 1))  # = sum of all |z| variances
        self.r = self.eigvals.numel()
        steps, d = gaussian_uniform_quantizer_table(self.max_bits)
        self._steps = torch.as_tensor(steps)  # (max_bits + 1,)
        self._d = torch.as_tensor(d)
        # Greedy allocation order: every (component, bit number) pair by its marginal return
        # lambda_i (d(b) - d(b + 1)); d convex, so each component's bits come in order.
        lam = self.eigvals.numpy()
        gain = lam[:, None] * (d[:-1] - d[1:])[None, :]  # (r, max_bits)
        comp, bit = np.meshgrid(np.arange(self.r), np.arange(self.max_bits), indexing="ij")
        order = np.lexsort((bit.ravel(), comp.ravel(), -gain.ravel()))
        self._order_comp = torch.as_tensor(comp.ravel()[order])  # (r * max_bits,)
        self._gain_cumsum = np.concatenate([[0.0], np.cumsum(gain.ravel()[order])])
        self._layouts: dict[int, tuple[Tensor, Tensor, Tensor]] = {}

    @property
    def capacity_bits(self) -> int:
        """Most bits the quantiser uses; a larger B is padded."""
        return self.r * self.max_bits

    def allocation(self, total_bits: int) -> Tensor:
        """Bits per KLT component (r,) int64 for a budget of ``total_bits`` (sum = min(B, max))."""
        B = self._check_bits(total_bits)
        used = min(B, self.capacity_bits)
        return torch.bincount(self._order_comp[:used], minlength=self.r)

    def expected_mse(self, total_bits) -> np.ndarray | float:
        """Modelled MSE per latent entry at B bits (scalar or array of B), for Gaussian components:
        (sum_i lambda_i d(b_i) + variance outside the r components) / |z|."""
        b = np.minimum(np.asarray(total_bits, dtype=np.int64), self.capacity_bits)
        if np.any(b < 0):
            raise ValueError(f"total_bits must be >= 0, got {total_bits!r}")
        out = (self.total_var - self._gain_cumsum[b]) / self.numel
        return float(out) if out.ndim == 0 else out

    def _check_bits(self, total_bits) -> int:
        if isinstance(total_bits, bool) or int(total_bits) != total_bits or total_bits < 0:
            raise ValueError(f"total_bits must be a non-negative integer, got {total_bits!r}")
        return int(total_bits)

    def _layout(self, B: int) -> tuple[Tensor, Tensor, Tensor]:
        """(bits per component (r,), component of each bit position (used,), its shift (used,))."""
        if B not in self._layouts:
            alloc = self.allocation(B)
            comp = torch.repeat_interleave(torch.arange(self.r), alloc)  # (used,)
            start = torch.cumsum(alloc, 0) - alloc  # first bit position of each component
            pos = torch.arange(comp.numel())
            shift = alloc[comp] - 1 - (pos - start[comp])  # MSB first
            self._layouts[B] = (alloc, comp, shift)
        return self._layouts[B]

    def _coefficients(self, z: Tensor) -> Tensor:
        zf = z.detach().reshape(z.shape[0], -1).double().cpu()
        if zf.shape[1] != self.numel:
            raise ValueError(f"z must have {self.numel} entries per latent (shape "
                             f"{self.latent_shape}), got {tuple(z.shape)}")
        return (zf - self.mean) @ self.eigvecs  # (batch, r)

    def _steps_for(self, alloc: Tensor) -> Tensor:
        return self.eigvals.sqrt() * self._steps[alloc]  # (r,); 0 where no bits

    def quantise(self, z: Tensor, total_bits: int) -> Tensor:
        """z (batch, C, h, w) -> bits (batch, B) float32 in {0, 1} on z's device."""
        B = self._check_bits(total_bits)
        alloc, comp, shift = self._layout(B)
        y = self._coefficients(z)  # (batch, r)
        levels = 2 ** alloc  # (r,)
        step = self._steps_for(alloc).clamp_min(1e-300)
        idx = torch.floor(y / step + levels / 2).clamp(torch.zeros_like(levels), levels - 1).long()
        idx = torch.where(alloc > 0, idx, torch.zeros_like(idx))  # (batch, r)
        bits = torch.zeros(y.shape[0], B, dtype=torch.float32)
        bits[:, :comp.numel()] = ((idx[:, comp] >> shift) & 1).float()
        return bits.to(z.device)

    def dequantise(self, bits: Tensor, total_bits: int, erased: Optional[Tensor] = None,
                   dtype: torch.dtype = torch.float32) -> Tensor:
        """bits (batch, B) -> z_hat (batch, C, h, w); ``erased`` (batch, B) bool marks bits from a
        failed codeword: every component with an erased bit is reconstructed as the mean."""
        B = self._check_bits(total_bits)
        if bits.dim() != 2 or bits.shape[1] != B:
            raise ValueError(f"bits must have shape (batch, {B}), got {tuple(bits.shape)}")
        alloc, comp, shift = self._layout(B)
        device = bits.device
        b = bits.detach().cpu()[:, :comp.numel()].round().long()  # (batch, used)
        idx = torch.zeros(b.shape[0], self.r, dtype=torch.long)
        idx.index_add_(1, comp, b << shift)
        levels = 2 ** alloc
        y_hat = (idx - levels / 2 + 0.5) * self._steps_for(alloc)  # (batch, r)
        keep = (alloc > 0).expand_as(y_hat)
        if erased is not None:
            e = erased.detach().cpu()[:, :comp.numel()].double()
            hit = torch.zeros(b.shape[0], self.r, dtype=torch.float64).index_add_(1, comp, e) > 0
            keep = keep & ~hit
        y_hat = torch.where(keep, y_hat, torch.zeros_like(y_hat))
        z_hat = self.mean + y_hat @ self.eigvecs.T  # (batch, |z|)
        return z_hat.reshape(-1, *self.latent_shape).to(device=device, dtype=dtype)

    def reconstruct(self, z: Tensor, total_bits: int) -> Tensor:
        """The quantised latent at B bits with no channel errors (quantise then dequantise)."""
        return self.dequantise(self.quantise(z, total_bits), total_bits, dtype=z.dtype)

    def mean_latent(self, batch: int, dtype: torch.dtype = torch.float32,
                    device: Optional[torch.device] = None) -> Tensor:
        """The mean latent repeated (batch, C, h, w): what the UE shows on an outage."""
        return self.mean.reshape(1, *self.latent_shape).expand(batch, *self.latent_shape).to(
            device=device, dtype=dtype).clone()


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
#: ``python benchmarks/bench_digital.py --thresholds 64 32 96``, ~8 min on one shared core,
#: 2026-11-29). The budgets are the mini model's fc 0.25 / 0.5 / 0.75 (|z| = 256 -> 64 / 128 / 192
#: real symbols -> 32 / 64 / 96 QAM symbols). Their Shannon limits (log2(1 + SNR) = bits per QAM
#: symbol) are -5.0, -2.3, 0.0, 1.8, 4.8, 7.3, 8.5, 11.8, 13.4, 14.9 dB: these short codes
#: (n = 64..576 bits) sit 2-4 dB above them. Other budgets are simulated on first use and cached
#: in memory (:func:`required_snr_db`).
MEASURED_THRESHOLDS_DB: dict[int, tuple[Optional[float], ...]] = {
    #     QPSK 1/5  1/3   1/2  2/3  16QAM 1/2  2/3   3/4  64QAM 2/3  3/4   5/6
    32: (-1.0, 0.7, 2.7, 4.3, 7.9, 10.0, 11.4, 14.9, 16.8, 18.5),
    64: (-1.7, 0.3, 2.2, 4.0, 7.3, 9.9, 11.2, 14.8, 16.1, 17.8),
    96: (-2.2, -0.2, 2.1, 4.0, 7.2, 9.6, 10.8, 14.6, 16.1, 17.6),
}

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
        from sionna.phy.fec.ldpc import LDPC5GDecoder, LDPC5GEncoder
        from sionna.phy.mapping import Demapper, Mapper

        self.n_complex, self.mcs, self.num_iter, self.crc = int(n_complex), mcs, int(num_iter), crc
        self.device = torch.device(device)
        dev = str(self.device)
        self.crc_length = 0
        if crc is not None:
            from sionna.phy.fec.crc import CRCEncoder

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
                    from sionna.phy.fec.crc import CRCDecoder, CRCEncoder

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
    def channel(self, x: Tensor, *, kind: str, snr_db: Optional[float], num_blocks: int = 1,
                generator: Optional[torch.Generator] = None) -> tuple[Tensor, Tensor]:
        """QAM symbols x (batch, n_complex), Es = 1 -> (equalised y, noise variance per symbol
        (batch, n_complex)), what the demapper sees. Draws the fading (Rayleigh), then the noise."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        batch = x.shape[0]
        if kind == "none" or snr_db is None:
            # no noise: the LLRs only need the right signs (the demapper floors `no` anyway)
            return x, torch.full((batch, self.n_complex), 1e-6, device=self.device)
        sigma2 = 10.0 ** (-float(snr_db) / 10.0)  # noise per real symbol at unit real power
        if kind == "rayleigh":
            hb = _randn((batch, num_blocks, 2), generator, self.device) * math.sqrt(0.5)
            hb = torch.complex(hb[..., 0], hb[..., 1])  # (batch, nb) ~ CN(0, 1)
            sizes = torch.tensor(block_sizes(self.n_complex, num_blocks), device=self.device)
            h = torch.repeat_interleave(hb, sizes, dim=1)  # (batch, n_complex)
        w = _randn((batch, self.n_complex, 2), generator, self.device) * math.sqrt(sigma2 / 2)
        n = torch.complex(w[..., 0], w[..., 1])  # CN(0, sigma^2): Es/N0 = 1 / sigma^2 = SNR
        if kind == "rayleigh":
            y = (h * x + n) / h  # zero forcing with perfect CSI at the UE
            return y, sigma2 / h.abs().pow(2).clamp_min(1e-30)  # noise variance after equalising
        return x + n, torch.full((batch, self.n_complex), sigma2, device=self.device)

    @torch.no_grad()
    def transmit(self, bits: Tensor, *, kind: str, snr_db: Optional[float], num_blocks: int = 1,
                 generator: Optional[torch.Generator] = None) -> LinkOutput:
        """Send bits (batch, K) over the channel ``kind`` at ``snr_db`` (None or kind "none":
        noiseless); see the module docstring for the conventions."""
        if bits.dim() != 2 or bits.shape[1] != self.info_bits:
            raise ValueError(f"bits must have shape (batch, {self.info_bits}), got {tuple(bits.shape)}")
        x = self.encode(bits)  # (batch, n_complex) complex, Es = 1
        y, no = self.channel(x, kind=kind, snr_db=snr_db, num_blocks=num_blocks, generator=generator)
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


def codeword_error_rate(link: LdpcLink, snr_db: float, num_codewords: int, seed: int = 0) -> float:
    """Fraction of codewords in error on AWGN at ``snr_db`` (random bits, fixed seed: the same
    bits and noise realisations at every SNR, so that the curve is monotone in practice)."""
    batch = max(1, math.ceil(num_codewords / link.num_codewords))
    gen = torch.Generator(device=link.device).manual_seed(seed)
    bits = torch.randint(0, 2, (batch, link.info_bits), generator=gen, device=link.device).float()
    out = link.transmit(bits, kind="awgn", snr_db=snr_db, generator=gen)
    return float(out.codeword_error.float().mean())


def measure_threshold_db(n_complex: int, mcs: MCS | int, *, num_iter: int = 20,
                         target: float = 0.1, num_codewords: Optional[int] = None,
                         resolution_db: float = 0.1, seed: int = 0) -> Optional[float]:
    """The smallest AWGN SNR (dB, on a ``resolution_db`` grid) with codeword error rate <=
    ``target`` for ``mcs`` on ``n_complex`` QAM symbols, or None if the MCS does not fit.

    Bisection between the Shannon limit of the MCS's spectral efficiency (where a finite-length
    code always fails) and 12 dB above it, each point simulated with the same bits and noise
    (:func:`codeword_error_rate`). ``num_codewords`` defaults to 400 for short codes, fewer
    for long ones (whose waterfall is steeper): ``clip(200000 // n, 48, 400)``.
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
    while codeword_error_rate(link, hi, num_codewords, seed) > target:
        lo, hi = hi, hi + 6.0
        if hi > 60:
            raise RuntimeError(f"{mcs.name} on {n_complex} QAM symbols: no SNR up to 60 dB "
                               f"reaches codeword error rate {target}")
    while hi - lo > resolution_db * 1.5:
        mid = q((lo + hi) / 2)
        if codeword_error_rate(link, mid, num_codewords, seed) <= target:
            hi = mid
        else:
            lo = mid
    return round(hi, 6)


def required_snr_db(n_complex: int, mcs: MCS | int, num_iter: int = 20) -> Optional[float]:
    """Required AWGN SNR (dB) for codeword error rate <= 10%: :data:`MEASURED_THRESHOLDS_DB` when
    it has the budget (for ``num_iter = 20``), else simulated once (:func:`measure_threshold_db`)
    and cached in memory per (n_complex, MCS, num_iter). None: the MCS does not fit."""
    idx = mcs if isinstance(mcs, int) else mcs.index
    if num_iter == 20 and n_complex in MEASURED_THRESHOLDS_DB:
        return MEASURED_THRESHOLDS_DB[n_complex][idx]
    key = (int(n_complex), idx, int(num_iter))
    if key not in _THRESHOLD_CACHE:
        log.info("measuring the AWGN threshold of %s on %d QAM symbols", MCS_TABLE[idx].name, n_complex)
        _THRESHOLD_CACHE[key] = measure_threshold_db(n_complex, idx, num_iter=num_iter)
    return _THRESHOLD_CACHE[key]


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


class LatentDigitalScheme:
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

    ``info`` (each (B,) per image): ``digital_bler`` (fraction of codewords decoded wrongly,
    against the sent bits), ``digital_mcs`` (index), ``digital_info_bits`` (K),
    ``digital_success`` (1.0 if every codeword decoded), ``digital_codewords``.
    """

    name = "digital"

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
                 snr_db: Optional[float] = None,
                 generator: Optional[torch.Generator] = None) -> SchemeOutput:
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
        info = {"digital_bler": bler, "digital_mcs": full(m), "digital_info_bits": full(K),
                "digital_success": (~out.codeword_error.any(1)).double().cpu(),
                "digital_codewords": full(link.num_codewords)}
        return SchemeOutput(images=self.decode_image(z_hat), symbols=link.real_symbols,
                            z_hat=z_hat, info=info)


class CapacityDigitalScheme:
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
    ``info``: ``digital_info_bits`` (K), ``digital_success`` (no outage), ``digital_bler``
    (1 - success), ``digital_mcs`` (-1).
    """

    name = "capacity"

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
                 snr_db: Optional[float] = None,
                 generator: Optional[torch.Generator] = None) -> SchemeOutput:
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
        info = {"digital_bler": (~ok).double(), "digital_mcs": full(-1),
                "digital_info_bits": full(K), "digital_success": ok.double()}
        return SchemeOutput(images=self.decode_image(z_hat), symbols=self.symbols, z_hat=z_hat,
                            info=info)
