"""Multiple access for K users in one frame: TDMA and NOMA over the registered channel models and
schemes, and what is measured of a frame (per-user power, Jain's fairness index).

**The frame.** A frame has the channel uses of ONE user's full-rate transmission of the scheme at
rate fc (``N = round(fc |z|)`` real symbols for a scheme with a rate; a rate-less scheme's own
symbol count, e.g. ``3 H W`` for ``centralized``), at unit transmit power per channel use. The K
users share it; the frame's energy is ``N`` (unit power x N uses) and no allocation here spends
more (:func:`frame_energy` <= 1).

**TDMA** (:func:`tdma_links`). The frame is cut into K slots; user u with share ``s_u`` (equal:
``1/K``) gets ``round(s_u N)`` of the uses, alone, at full power. A scheme with a rate runs at
``fc s_u`` (its own rate handling: the scheme built at the lower rate); a rate-less scheme sends the
first ``round(s_u N)`` of its symbols and its receiver puts the prior mean 0 in the others
(:class:`Slot`). Receiver: the scheme's own, at the user's SNR.

**NOMA** (:func:`noma_links`). Users are paired by average SNR, the strongest with the weakest
(then the second strongest with the second weakest, ...); an odd user out is alone. Every pair
(and the one alone) gets an equal TDMA slot, ``1 / ceil(K/2)`` of the frame, and the pair's two
seeds are superposed in all of the slot's uses, ``x = sqrt(p_w) x_w + sqrt(p_s) x_s`` with
``p_w = users.noma_power`` and ``p_s = 1 - p_w`` (so the slot's power is 1). With gain g and noise
variance sigma^2 per real symbol at a user, the weak user treats the strong user's seed as noise,
``SINR_w = p_w g / (p_s g + sigma^2)``; the strong user cancels the weak seed first (digital:
decode and subtract the codeword; analog seeds: the LMMSE estimate, which removes nothing, or
decode, re-encode and subtract). The superposition, each user's own channel (AWGN or fading) and
the receivers are simulated in :mod:`.noma`; a :class:`UserLink` here is the plan: the user's
slot, power and role, and its SINR on AWGN (g = 1) with the partner as noise
(:attr:`UserLink.snr_db`). With all power to one user (``p = 1``) its link is exactly the
single-user one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch

from meg_lightning.config import ACCESS
from meg_lightning.errors import ConfigError


@dataclass(frozen=True)
class UserLink:
    """One user's part of a frame.

    ``avg_snr_db``: its average SNR (unit power, no interference); ``share``: the fraction of the
    frame's channel uses in its slot; ``power``: its share of the transmit power in those uses;
    ``interference``: the power share of the superposed seed it treats as noise (0 when alone);
    ``role``: ``alone`` | ``strong`` | ``weak``."""

    user: int
    avg_snr_db: float
    share: float
    power: float = 1.0
    interference: float = 0.0
    role: str = "alone"

    @property
    def snr_db(self) -> float:
        """The SNR (dB) the user's receiver works at: ``p g / (i g + sigma^2)`` with g = 1 and
        ``sigma^2 = 10^(-avg_snr_db / 10)`` (its average SNR when alone at full power)."""
        if self.power == 1.0 and self.interference == 0.0:
            return float(self.avg_snr_db)  # exactly the single-user link
        sigma2 = 10 ** (-self.avg_snr_db / 10)
        if self.power <= 0:
            return -math.inf
        return 10 * math.log10(self.power / (self.interference + sigma2))


def jain_index(values: Sequence[float]) -> float:
    """Jain's fairness index ``(sum x)^2 / (n sum x^2)`` of non-negative values: 1 when all are
    equal, 1/n when one user gets everything; nan for none or all zero."""
    x = torch.as_tensor([float(v) for v in values], dtype=torch.float64)
    if x.numel() == 0 or float((x * x).sum()) == 0:
        return float("nan")
    return float(x.sum() ** 2 / (x.numel() * (x * x).sum()))


def user_snrs(cell_snr_db: float, k: int, snrs_db: Optional[Sequence[float]] = None,
              spread_db: float = 0.0) -> list[float]:
    """The K users' average SNRs (dB): ``snrs_db`` when given, else equally spaced over
    ``cell_snr_db +- spread_db / 2`` (user 0 the strongest; one user: ``cell_snr_db``)."""
    if snrs_db is not None:
        if len(snrs_db) != k:
            raise ConfigError("users.snrs_db", list(snrs_db), f"a list of users.k={k} dB values")
        return [float(s) for s in snrs_db]
    if k == 1:
        return [float(cell_snr_db)]
    return [float(cell_snr_db) + spread_db / 2 - spread_db * u / (k - 1) for u in range(k)]


def tdma_links(snrs_db: Sequence[float], shares: Optional[Sequence[float]] = None
               ) -> list[UserLink]:
    """TDMA: user u alone in a slot of ``shares[u]`` of the frame (equal shares when None)."""
    k = len(snrs_db)
    shares = [1.0 / k] * k if shares is None else [float(s) for s in shares]
    if len(shares) != k or any(s <= 0 for s in shares) or not math.isclose(sum(shares), 1.0,
                                                                          abs_tol=1e-6):
        raise ConfigError("users.shares", list(shares),
                          f"a list of {k} numbers > 0 that sum to 1")
    return [UserLink(u, float(snrs_db[u]), shares[u] if k > 1 else 1.0) for u in range(k)]


def pairs(snrs_db: Sequence[float]) -> list[tuple[int, ...]]:
    """NOMA pairs (strong, weak) by average SNR: the strongest with the weakest, and so on; an
    odd user out (the median) is alone, ``(u,)``. Ties keep the user order."""
    order = sorted(range(len(snrs_db)), key=lambda u: (-snrs_db[u], u))
    out: list[tuple[int, ...]] = []
    i, j = 0, len(order) - 1
    while i < j:
        out.append((order[i], order[j]))
        i, j = i + 1, j - 1
    if i == j:
        out.append((order[i],))
    return out


def noma_links(snrs_db: Sequence[float], weak_power: float = 0.8) -> list[UserLink]:
    """NOMA: pairs superposed in equal slots of ``1 / ceil(K/2)`` of the frame; the weak user gets
    ``weak_power`` of the power and treats the strong seed as noise, the strong user the rest and
    cancels the weak seed first (the receivers: :mod:`.noma`)."""
    if not 0 <= weak_power <= 1:
        raise ConfigError("users.noma_power", weak_power, "a number in [0, 1]")
    groups = pairs(snrs_db)
    share = 1.0 / len(groups)
    links: dict[int, UserLink] = {}
    for g in groups:
        if len(g) == 1:
            links[g[0]] = UserLink(g[0], float(snrs_db[g[0]]), share)
            continue
        s, w = g
        p_w, p_s = float(weak_power), 1.0 - float(weak_power)
        links[w] = UserLink(w, float(snrs_db[w]), share, p_w, p_s, "weak")
        links[s] = UserLink(s, float(snrs_db[s]), share, p_s, p_w, "strong")
    return [links[u] for u in range(len(snrs_db))]


def plan_frame(access: str, snrs_db: Sequence[float], shares: Optional[Sequence[float]] = None,
               weak_power: float = 0.8) -> list[UserLink]:
    """The users' links of one frame under ``access`` (``tdma`` | ``noma``)."""
    if access == "tdma":
        return tdma_links(snrs_db, shares)
    if access == "noma":
        return noma_links(snrs_db, weak_power)
    raise ConfigError("users.access", access, f"one of {', '.join(ACCESS)}")


def frame_links(users: Any, cell_snr_db: float, k: Optional[int] = None,
                access: Optional[str] = None) -> list[UserLink]:
    """The links of one frame from the ``users.*`` config (``UsersConfig``) at a cell's SNR;
    ``k`` / ``access`` override ``users.k`` / ``users.access`` (the sweep's K and access; the
    listed ``users.snrs_db`` and ``users.shares`` apply at ``users.k`` only)."""
    k = users.k if k is None else k
    access = users.access if access is None else access
    listed = k == users.k
    snrs = user_snrs(cell_snr_db, k, users.snrs_db if listed else None, users.spread_db)
    return plan_frame(access, snrs, users.shares if listed else None, users.noma_power)


def frame_energy(links: Sequence[UserLink]) -> float:
    """The frame's transmit energy of these links as a fraction of its budget (N uses at unit
    power): ``sum over slots of share x (sum of the slot's powers)``; <= 1 for every plan."""
    return float(sum(link.share * link.power for link in links))


def slot_symbols(n: int, share: float) -> int:
    """Real symbols of a slot of ``share`` of a frame of ``n``: ``round(share n)``."""
    return int(round(share * n))


class Slot:
    """The cell's channel seen by a rate-less scheme in a slot of ``m`` of its ``n`` symbols: the
    first ``m`` symbols of each sample are sent (power-normalised over those m), the receiver puts
    0, the prior mean, in the others. Everything else is the channel's."""

    def __init__(self, channel: Any, m: int):
        self.channel, self.m = channel, int(m)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.channel, name)

    @property
    def calibration(self) -> "Slot":
        """The slot on the channel's calibration link (:attr:`.noma.NomaLink.calibration`)."""
        return Slot(getattr(self.channel, "calibration", self.channel), self.m)

    def __call__(self, x: torch.Tensor, **kwargs: Any) -> dict:
        flat = x.flatten(1)
        if self.m >= flat.shape[1]:
            return self.channel(x, **kwargs)
        out = dict(self.channel(flat[:, :self.m], **kwargs))
        x_hat = torch.zeros_like(flat)
        x_hat[:, :self.m] = out["x_hat"]
        out["x_hat"] = x_hat.reshape(x.shape)
        return out
