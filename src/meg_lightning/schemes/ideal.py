"""An ideal capacity-achieving channel code: the bits it carries in a symbol budget over the
cell's channel (all or nothing per transmission), for the schemes that send bits without
simulating a real code (``digital-image``, ``prompt``, ``capacity``)."""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from meg_lightning.schemes.base import link_snr
from meg_lightning.schemes.ldpc import block_sizes


def awgn_capacity_bits(symbols: int, snr_db: float) -> float:
    """Bits an ideal code carries in ``symbols`` real symbols: symbols * 0.5 log2(1 + SNR)."""
    return symbols * 0.5 * math.log2(1 + 10 ** (snr_db / 10))


def threshold_snr_db(bits: float, symbols: int) -> float:
    """The AWGN SNR (dB) at which ``bits`` just fit in ``symbols`` real symbols (inverse of above)."""
    r = 2 * bits / symbols  # needed log2(1 + SNR)
    if r > 60:  # 2^r - 1 ~ 2^r: avoid overflow
        return 10 * r * math.log10(2)
    return 10 * math.log10(2 ** r - 1) if r > 0 else -math.inf


def group_sizes(symbols: int, channel) -> Tensor:
    """Real symbols per gain group of the channel over a ``symbols`` budget, (groups,) float64."""
    groups = channel.groups(-(-symbols // 2))
    return torch.tensor(block_sizes(symbols, groups), dtype=torch.float64)


def mutual_information(gains: Tensor, sizes: Tensor, snr_db: float) -> Tensor:
    """Bits carried for power gains |h|^2 (..., groups) over groups of ``sizes`` real symbols at
    average ``snr_db``: sum_g n_g 0.5 log2(1 + |h_g|^2 SNR)."""
    return (sizes * 0.5 * torch.log2(1 + gains * 10 ** (snr_db / 10))).sum(-1)


def capacity_bits(symbols: int, channel, batch: int,
                  generator: Optional[torch.Generator]) -> Tensor:
    """Bits an ideal capacity-achieving code carries in ``symbols`` real symbols over ``channel``,
    for each of ``batch`` transmissions, (batch,) float64.

    Without fading: symbols x 0.5 log2(1 + SNR). With fading and CSI at the receiver the code
    spans the gain groups and carries sum_g n_g 0.5 log2(1 + |h_g|^2 SNR) for the realised gains
    (drawn by the channel from ``generator``). Noiseless: infinite.
    """
    snr = link_snr(channel)
    if snr is None:
        return torch.full((batch,), math.inf, dtype=torch.float64)
    if not channel.fading:
        return torch.full((batch,), awgn_capacity_bits(symbols, snr), dtype=torch.float64)
    gains = channel.draw_power_gains(batch, -(-symbols // 2), generator)  # (batch, groups)
    snr_lin = 10 ** (snr / 10)
    return (group_sizes(symbols, channel) * 0.5 * torch.log2(1 + gains * snr_lin)).sum(1)
