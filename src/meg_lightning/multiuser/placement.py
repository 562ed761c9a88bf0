"""Users placed in a 3GPP UMi-Street Canyon cell: distance, LOS / NLOS, path loss, average SNR.

``users.placement=umi`` (docs/MULTIUSER.md, "Placement"). The edge server is the base station at
the centre of a cell; each user is dropped outdoors, uniformly in area in the annulus
``[users.min_distance_m, users.cell_radius_m]`` (:func:`drop_distances`: ``d = sqrt(u (R^2 -
r^2) + r^2)``, u ~ U(0, 1)), at 2D distance d and 3D distance
``d_3D = sqrt(d^2 + (h_BS - h_UT)^2)`` with the scenario's heights ``h_BS = 10 m``,
``h_UT = 1.5 m``. From 3GPP TR 38.901 (v17.0.0):

- **LOS probability** (Table 7.4.2-1, UMi-Street Canyon, :func:`los_probability`):
  ``Pr_LOS = 1`` for ``d <= 18 m``, else ``18 / d + exp(-d / 36) (1 - 18 / d)``; each user's
  state is one Bernoulli draw.
- **Path loss** (Table 7.4.1-1, UMi-Street Canyon, ``f_c`` in GHz, distances in m,
  :func:`pathloss_los`, :func:`pathloss_nlos`):

  - LOS: ``PL_1 = 32.4 + 21 log10(d_3D) + 20 log10(f_c)`` for ``10 m <= d <= d'_BP``,
    ``PL_2 = 32.4 + 40 log10(d_3D) + 20 log10(f_c) - 9.5 log10(d'_BP^2 + (h_BS - h_UT)^2)``
    beyond, with the breakpoint distance ``d'_BP = 4 h'_BS h'_UT f_c / c`` (Note 1:
    ``h' = h - h_E``, ``h_E = 1 m``, ``f_c`` in Hz, ``c = 3.0e8 m/s``): 210 m at 3.5 GHz;
  - NLOS: ``max(PL_LOS, PL'_NLOS)``, ``PL'_NLOS = 35.3 log10(d_3D) + 22.4 + 21.3 log10(f_c)
    - 0.3 (h_UT - 1.5)``;
  - shadow fading (``users.shadowing``): log-normal, ``sigma_SF = 4 dB`` (LOS), ``7.82 dB`` (NLOS).
- **Average SNR** (:func:`average_snr_db`): ``P_tx - PL - N``, the noise power
  ``N = -174 dBm/Hz + 10 log10(B) + NF`` over the bandwidth B with the receiver's noise figure
  NF: ``users.tx_power_dbm`` (30), ``users.bandwidth_mhz`` (20: N = -92.0 dBm with NF 9),
  ``users.noise_figure_db`` (9), ``users.carrier_ghz`` (3.5). No antenna gains. With these a
  user at 200 m is at 6.8 dB in NLOS and 30.4 dB in LOS (no shadowing).

This SNR is the average received SNR per real symbol the channel layer takes (docs/ARCHITECTURE.md;
it equals Es/N0 per complex symbol); the small-scale fading on top is the channel model's. Sionna
(``sionna.phy.channel.tr38901``, the ``UMi`` scenario) implements the same formulas; it takes
the exact speed of light for ``c``, so its breakpoint is 0.07% longer than the table's.

Draws come from one ``torch.Generator`` seeded by the caller: the sweep drops the largest swept K
once per channel kind and gives a frame of K users the first K of them, so that the users of a
smaller frame are also in every larger one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

#: base-station (edge-server) height of the UMi scenario (m; TR 38.901 Table 7.4.1-1)
H_BS = 10.0
#: user-terminal height (m; 1.5 m, the ground floor, where the NLOS height term vanishes)
H_UT = 1.5
#: effective environment height of UMi (m; Table 7.4.1-1, Note 1)
H_E = 1.0
#: the speed of light TR 38.901 uses (m/s)
C = 3.0e8
#: thermal noise power spectral density at 290 K (dBm/Hz)
NOISE_DBM_HZ = -174.0
#: shadow-fading standard deviations (dB), LOS and NLOS (Table 7.4.1-1, UMi-Street Canyon)
SIGMA_SF_LOS, SIGMA_SF_NLOS = 4.0, 7.82


def breakpoint_m(carrier_ghz: float, h_bs: float = H_BS, h_ut: float = H_UT) -> float:
    """The breakpoint distance ``d'_BP = 4 (h_BS - h_E) (h_UT - h_E) f_c / c`` (m)."""
    return 4 * (h_bs - H_E) * (h_ut - H_E) * carrier_ghz * 1e9 / C


def distance_3d(d_2d: Tensor, h_bs: float = H_BS, h_ut: float = H_UT) -> Tensor:
    return torch.sqrt(d_2d ** 2 + (h_bs - h_ut) ** 2)


def pathloss_los(d_2d: Tensor, carrier_ghz: float, h_bs: float = H_BS,
                 h_ut: float = H_UT) -> Tensor:
    """UMi-Street Canyon LOS path loss (dB) at 2D distances ``d_2d`` (m), PL_1 up to the
    breakpoint and PL_2 beyond it."""
    d_2d = torch.as_tensor(d_2d, dtype=torch.float64)
    d3 = distance_3d(d_2d, h_bs, h_ut)
    bp = breakpoint_m(carrier_ghz, h_bs, h_ut)
    fc = math.log10(carrier_ghz)
    pl1 = 32.4 + 21 * torch.log10(d3) + 20 * fc
    pl2 = (32.4 + 40 * torch.log10(d3) + 20 * fc
           - 9.5 * math.log10(bp ** 2 + (h_bs - h_ut) ** 2))
    return torch.where(d_2d <= bp, pl1, pl2)


def pathloss_nlos(d_2d: Tensor, carrier_ghz: float, h_bs: float = H_BS,
                  h_ut: float = H_UT) -> Tensor:
    """UMi-Street Canyon NLOS path loss (dB): ``max(PL_LOS, PL'_NLOS)``."""
    d_2d = torch.as_tensor(d_2d, dtype=torch.float64)
    d3 = distance_3d(d_2d, h_bs, h_ut)
    pl_n = 35.3 * torch.log10(d3) + 22.4 + 21.3 * math.log10(carrier_ghz) - 0.3 * (h_ut - 1.5)
    return torch.maximum(pathloss_los(d_2d, carrier_ghz, h_bs, h_ut), pl_n)


def los_probability(d_2d: Tensor) -> Tensor:
    """UMi-Street Canyon LOS probability at 2D distances ``d_2d`` (m, outdoor users)."""
    d = torch.as_tensor(d_2d, dtype=torch.float64)
    far = 18 / d + torch.exp(-d / 36) * (1 - 18 / d)
    return torch.where(d <= 18, torch.ones_like(d), far)


def noise_dbm(bandwidth_mhz: float, noise_figure_db: float) -> float:
    """Receiver noise power (dBm): ``-174 dBm/Hz + 10 log10(B) + NF``."""
    return NOISE_DBM_HZ + 10 * math.log10(bandwidth_mhz * 1e6) + noise_figure_db


def average_snr_db(pathloss_db: Tensor, tx_power_dbm: float, bandwidth_mhz: float,
                   noise_figure_db: float) -> Tensor:
    """Average received SNR (dB): ``P_tx - PL - N``."""
    return tx_power_dbm - pathloss_db - noise_dbm(bandwidth_mhz, noise_figure_db)


def drop_distances(n: int, min_m: float, max_m: float, generator: torch.Generator) -> Tensor:
    """n 2D distances (m) uniform in area in the annulus [min_m, max_m]: the CDF of d is
    ``(d^2 - min_m^2) / (max_m^2 - min_m^2)``, inverted at u ~ U(0, 1)."""
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    return torch.sqrt(u * (max_m ** 2 - min_m ** 2) + min_m ** 2)


@dataclass(frozen=True)
class Placement:
    """Dropped users (one entry each): 2D distance (m), LOS state, path loss incl. shadow
    fading (dB) and average SNR (dB)."""

    distance_m: list[float]
    los: list[bool]
    pathloss_db: list[float]
    snr_db: list[float]


def drop_users(n: int, users: Any, generator: torch.Generator) -> Placement:
    """Drop ``n`` users in the cell of the ``users.*`` config (``UsersConfig``): distances, LOS
    states, path loss (with shadow fading when ``users.shadowing``) and average SNRs, drawn in
    that order from ``generator``."""
    d = drop_distances(n, users.min_distance_m, users.cell_radius_m, generator)
    los = torch.rand(n, generator=generator, dtype=torch.float64) < los_probability(d)
    pl = torch.where(los, pathloss_los(d, users.carrier_ghz), pathloss_nlos(d, users.carrier_ghz))
    if users.shadowing:
        sigma = torch.where(los, torch.full_like(d, SIGMA_SF_LOS),
                            torch.full_like(d, SIGMA_SF_NLOS))
        pl = pl + sigma * torch.randn(n, generator=generator, dtype=torch.float64)
    snr = average_snr_db(pl, users.tx_power_dbm, users.bandwidth_mhz, users.noise_figure_db)
    return Placement(d.tolist(), los.tolist(), pl.tolist(), snr.tolist())
