"""Reference power allocations for the seed link (paper Sec. IV, eq. 30c).

All work in the channel layer's units: block powers are RELATIVE to the equal share ``P_max / B``
(equal allocation = all ones, the budget is ``sum_b p_b = B``), ``g_b = |h_b|^2`` and ``snr_db`` is
the average SNR of the equal allocation. Their figure of merit is the expected distortion of a
:class:`LinkModel`, the linear-MMSE model of the seed link: real symbol ``m`` of block ``b`` has
energy ``e_bm`` (unit mean over the seed) and carries the share ``w_bm`` of the latent error
(``sum w = 1``), so with received power ``x_b = p_b g_b``

    D(p, g) = sum_b sum_m w_bm sigma2 / (x_b e_bm + sigma2),      sigma2 = 10^(-snr_db/10).

For unit-power Gaussian seeds (``w = 1/B``, ``e = 1``, :meth:`LinkModel.uniform`) this is the
MMSE-equalised distortion averaged over the B blocks (:func:`proxy_mse`,
:func:`meg_lightning.channels.theory.mse_mmse`); a codec's seed has unequal symbols (its first
components carry most of the latent), and :meth:`~meg_lightning.power.env.LatentSeeds.link_model`
measures its ``w`` and ``e``.

- :func:`equal_power`: ``p_b = 1`` (the paper's "tie" allocation of Fig. 10).
- :func:`oracle_power`: all ``g_b`` known in advance (non-causal); the convex problem
  ``min D s.t. sum p = B, p >= p_min`` solved by bisection on the Lagrange multiplier ``mu``. For
  the uniform model the KKT condition ``g sigma2 / (p g + sigma2)^2 = mu`` gives
  ``p_b = max(0, s/sqrt(gamma_b) - 1/gamma_b)`` with ``gamma_b = g_b / sigma2`` and
  ``s = 1/sqrt(mu sigma2)``; otherwise each block's ``p_b(mu)`` is found by an inner bisection.
- :class:`CausalDP`: the best causal policy (it sees ``g_1..g_t`` when choosing ``p_t``) for i.i.d.
  Rayleigh fading, by dynamic programming over (block, remaining power) with the expectation over
  ``g ~ Exp(1)`` taken on equal-probability quantiles. This is the optimum PPO should approach.

``min_power`` (relative to the equal share, < 1) is a floor every block receives: the receiver of a
codec seed expects every block, and a block sent with no power at all is outside what its decoder
was trained on. Both references solve the problem with the floor (``p = p_min + p'``,
``sum p' = B (1 - p_min)``).

Expected order of the mean distortion: equal >= causal DP >= oracle. The same allocations act
in the env as registered power policies (:mod:`.policies`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

import torch

from meg_lightning.channels import theory

__all__ = ["LinkModel", "equal_power", "oracle_power", "CausalDP", "proxy_mse"]

#: symbol terms kept per block: a longer block's symbols are pooled into this many energy bins
MAX_TERMS = 16


@dataclass(frozen=True)
class LinkModel:
    """The linear-MMSE model of a seed link: ``weight`` (B, M) the share of the latent error each
    term carries (sum 1) and ``energy`` (B, M) its relative symbol energy (unit mean over the
    seed). ``scale`` converts the model's distortion (in [0, 1]) into latent MSE per element."""

    weight: torch.Tensor
    energy: torch.Tensor
    scale: float = 1.0

    @classmethod
    def uniform(cls, num_blocks: int, scale: float = 1.0) -> "LinkModel":
        """Unit-power Gaussian symbols: every block carries 1/B of the error (the proxy)."""
        ones = torch.ones(num_blocks, 1, dtype=torch.float64)
        return cls(ones / num_blocks, ones, scale)

    @classmethod
    def from_symbols(cls, weight: torch.Tensor, energy: torch.Tensor, num_blocks: int,
                     scale: float = 1.0) -> "LinkModel":
        """From per-real-symbol weights and energies (k,) in channel order: block b holds the
        b-th of B equal runs (the channel's blocks; ``k`` padded with zero-weight symbols), each
        pooled into at most :data:`MAX_TERMS` terms of similar energy."""
        w, e = weight.double().flatten(), energy.double().flatten()
        per = -(-w.numel() // num_blocks)
        per += per % 2  # whole complex symbols
        pad = per * num_blocks - w.numel()
        w = torch.nn.functional.pad(w, (0, pad)).reshape(num_blocks, per)
        e = torch.nn.functional.pad(e, (0, pad), value=1.0).reshape(num_blocks, per)
        if per > MAX_TERMS:  # pool symbols of similar energy: sort, cut into equal runs
            order = e.argsort(dim=1)
            w, e = w.gather(1, order), e.gather(1, order)
            bins = MAX_TERMS
            cut = torch.linspace(0, per, bins + 1).round().long()
            ws, es = [], []
            for a, b in zip(cut[:-1].tolist(), cut[1:].tolist()):
                wb = w[:, a:b].sum(1)
                ws.append(wb)
                es.append((w[:, a:b] * e[:, a:b]).sum(1) / wb.clamp_min(1e-300)
                          + (wb <= 0) * e[:, a:b].mean(1))
            w, e = torch.stack(ws, 1), torch.stack(es, 1)
        w = w / w.sum().clamp_min(1e-300)
        return cls(w, e.clamp_min(1e-12), scale)

    @property
    def num_blocks(self) -> int:
        return self.weight.shape[0]

    @property
    def is_uniform(self) -> bool:
        return self.weight.shape[1] == 1 and bool(torch.all(self.energy == 1)) and bool(
            torch.allclose(self.weight, torch.full_like(self.weight, 1 / self.num_blocks)))

    def block_cost(self, x: torch.Tensor, sigma2: Any, block: Optional[int] = None) -> torch.Tensor:
        """``B sum_m w_bm sigma2 / (x e_bm + sigma2)``: the distortion of block ``block`` (or of
        every block along ``x``'s last dim) at received power ``x = p g``, scaled so that the
        uniform model gives the per-block MMSE ``sigma2 / (x + sigma2)``."""
        w, e = self.weight.to(x.device), self.energy.to(x.device)
        if block is not None:
            w, e = w[block], e[block]  # (M,)
            return self.num_blocks * (w * sigma2 / (x.unsqueeze(-1) * e + sigma2)).sum(-1)
        s2 = sigma2.unsqueeze(-1) if isinstance(sigma2, torch.Tensor) and sigma2.ndim else sigma2
        return self.num_blocks * (w * s2 / (x.unsqueeze(-1) * e + s2)).sum(-1)

    def distortion(self, power: torch.Tensor, g: torch.Tensor, sigma2: Any) -> torch.Tensor:
        """Expected distortion ``D(p, g)`` of each episode, ``(N, B), (N, B) -> (N,)`` (the mean
        of the block costs; in [0, 1]; times ``scale`` for latent MSE)."""
        return self.block_cost(power * g, sigma2).mean(-1)


def proxy_mse(power: torch.Tensor, g: torch.Tensor, snr_db: float) -> torch.Tensor:
    """Expected latent MSE per symbol ``D(p, g)`` of each episode for unit-power Gaussian seeds:
    ``(N, B), (N, B) -> (N,)``.

    The expectation is over the noise only (the fading ``g`` is given), so comparing policies on
    shared channel draws carries no noise-sampling variance.
    """
    sigma2 = theory.noise_var_from_snr_db(snr_db)
    return theory.mse_mmse(sigma2, power, g).mean(-1)


def equal_power(g: torch.Tensor) -> torch.Tensor:
    """Equal allocation: relative power 1 in every block, ``(N, B) -> (N, B)``."""
    return torch.ones_like(g)


def oracle_power(g: torch.Tensor, snr_db: Any, iters: int = 200,
                 model: Optional[LinkModel] = None, min_power: float = 0.0) -> torch.Tensor:
    """Non-causal optimal allocation for known gains ``g`` (N, B) -> relative powers (N, B).

    Bisection in float64, vectorised over episodes; ``snr_db`` a number or (N,) tensor. The
    uniform model (default) has a closed form per block given the water level; another
    ``model`` finds each block's power by an inner bisection on its marginal distortion.
    ``min_power`` is every block's floor (relative to the equal share).
    """
    B = g.shape[-1]
    floor = float(min_power)
    free = B * (1.0 - floor)  # the power above the floors
    s2 = torch.as_tensor(theory.noise_var_from_snr_db(torch.as_tensor(snr_db, dtype=torch.float64)),
                         dtype=torch.float64)
    s2 = s2.reshape(-1, 1) if s2.ndim else s2
    gd = g.double().clamp_min(1e-300)
    if model is None or model.is_uniform:
        gamma = (gd / s2).clamp_min(1e-300)  # (N, B)

        def alloc(level: torch.Tensor) -> torch.Tensor:  # log water level (N, 1) -> power above floor
            return (level.exp() / gamma.sqrt() - 1.0 / gamma - floor).clamp_min(0.0)

        # at lo every block gets nothing above its floor; at hi even the worst block alone gets
        # more than all the free power
        lo = (((1.0 / gamma + floor) * gamma.sqrt()).min(-1, keepdim=True).values).log()
        hi = (((B + 1.0 / gamma) * gamma.sqrt()).max(-1, keepdim=True).values).log()
    else:
        w = model.weight.to(gd.device) * B  # (B, M)
        e = model.energy.to(gd.device)

        def marginal(x: torch.Tensor) -> torch.Tensor:  # -dD/dp at x = p g, per block: (N, B)
            s = s2.unsqueeze(-1) if isinstance(s2, torch.Tensor) and s2.ndim else s2
            return gd * (w * e * s / (x.unsqueeze(-1) * e + s) ** 2).sum(-1)

        top = float(B + 1)

        def alloc(level: torch.Tensor) -> torch.Tensor:  # level = -log(mu): power above floor
            mu = (-level).exp()  # (N, 1)
            a = torch.zeros_like(gd)
            b = torch.full_like(gd, top)
            for _ in range(45):  # marginal is decreasing in p: find marginal(p) = mu
                m = 0.5 * (a + b)
                high = marginal((floor + m) * gd) > mu
                a, b = torch.where(high, m, a), torch.where(high, b, m)
            return 0.5 * (a + b) * (marginal(floor * gd) > mu)

        lo = -marginal(floor * gd).amax(-1, keepdim=True).log()  # mu above every marginal
        hi = -marginal((floor + top) * gd).amin(-1, keepdim=True).clamp_min(1e-300).log()
        iters = min(iters, 50)
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        over = alloc(mid).sum(-1, keepdim=True) > free
        hi = torch.where(over, mid, hi)
        lo = torch.where(over, lo, mid)
    p = alloc(hi)
    p = p * (free / p.sum(-1, keepdim=True).clamp_min(1e-300))  # the bisection's last slack
    return (floor + p).to(g.dtype)


class CausalDP:
    """Causal optimum of a :class:`LinkModel` by dynamic programming (i.i.d. Rayleigh fading).

    ``V_t(r)`` is the least expected sum of block costs ``d_t`` of blocks ``t..B-1`` with free
    relative power ``r`` (above the floors) before ``g_t`` is seen:

        V_{B-1}(r) = E_g[ d_{B-1}((p_min + r) g) ]                     (the last block spends all)
        V_t(r)     = E_g[ min_{0 <= p <= r} d_t((p_min + p) g) + V_{t+1}(r - p) ]

    with ``d_t`` :meth:`LinkModel.block_cost` (uniform model: ``d(x) = sigma2 / (x + sigma2)``).
    ``r`` lives on a uniform grid of ``grid + 1`` points on [0, B (1 - p_min)]; the inner minimum
    chooses the next free power on that grid; ``E_g`` averages ``quantiles`` equal-probability
    quantiles of Exp(1). :meth:`act` then applies the same minimum to the actual ``g_t`` and any
    ``r``.

    Args:
        num_blocks: B, the number of fading blocks (episode length).
        snr_db: average SNR of the equal allocation (dB).
        grid: number of intervals of the remaining-power grid (resolution ``B / grid``).
        quantiles: number of Exp(1) quantiles in the expectation over ``g``.
        model: the link model (default :meth:`LinkModel.uniform`).
        min_power: every block's floor, relative to the equal share.
    """

    def __init__(self, num_blocks: int, snr_db: float, grid: int = 400, quantiles: int = 128,
                 model: Optional[LinkModel] = None, min_power: float = 0.0):
        self.num_blocks, self.snr_db = num_blocks, snr_db
        self.model = model if model is not None else LinkModel.uniform(num_blocks)
        if self.model.num_blocks != num_blocks:
            raise ValueError(f"model of {self.model.num_blocks} blocks for {num_blocks}")
        self.floor = float(min_power)
        self.sigma2 = theory.noise_var_from_snr_db(snr_db)
        free = num_blocks * (1.0 - self.floor)
        self.r = torch.linspace(0.0, free, grid + 1, dtype=torch.float64)  # (R,)
        u = (torch.arange(quantiles, dtype=torch.float64) + 0.5) / quantiles
        g = -torch.log1p(-u)  # Exp(1) quantiles, (M,)
        self.value = torch.zeros(num_blocks + 1, grid + 1, dtype=torch.float64)  # V_t(r); V_B = 0
        self.value[num_blocks - 1] = self._d(self.r[None, :] * g[:, None], num_blocks - 1,
                                             g[:, None]).mean(0)
        # Going from r_i to r_k (k <= i) spends r_i - r_k = r_{i-k}: the block's cost depends
        # on i - k only, so min_k d(r_{i-k} g) + V(r_k) is a (min, +) convolution. Its (R, R)
        # cost matrix is a sliding window over one row of R costs (inf where k > i): one
        # evaluation per (g, j), not per (g, i, k), and no mask (5x faster, the same values).
        R = grid + 1
        for t in range(num_blocks - 2, -1, -1):
            acc = torch.zeros(R, dtype=torch.float64)
            for gc in g.split(32):  # (m,) chunk keeps the (m, R, R) tensor small
                d = self._d(self.r[None, :] * gc[:, None], t, gc[:, None])  # (m, R): d(r_j g)
                # e[q] = d[R-1-q] for q < R, inf after: window s = R-1-i, column k -> d[i-k]
                e = torch.cat([d.flip(1), torch.full((len(gc), R - 1), math.inf,
                                                     dtype=torch.float64)], 1)  # (m, 2R-1)
                cost = e.unfold(1, R, 1) + self.value[t + 1][None, None, :]  # (m, R, R) by s, k
                acc += cost.min(-1).values.flip(-1).sum(0)  # row s = R-1-i -> i
            self.value[t] = acc / len(g)

    def _d(self, pg: torch.Tensor, t: int = 0, g: Any = None) -> torch.Tensor:
        """Block ``t``'s cost at free power times gain ``pg`` (plus the floor's ``p_min g``)."""
        x = pg if not self.floor else pg + self.floor * (1.0 if g is None else g)
        if self.model.is_uniform:
            return self.sigma2 / (x + self.sigma2)
        return self.model.block_cost(x, self.sigma2, block=t)

    @property
    def expected_mse(self) -> float:
        """The DP's own estimate of the mean distortion ``V_0(B) / B``."""
        return float(self.value[0, -1]) / self.num_blocks

    def act(self, t: int, remaining: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """Relative power for block ``t`` given remaining relative power and ``g_t``, all (N,)."""
        r = remaining.double().clamp_min(0.0)
        if t >= self.num_blocks - 1:
            return r.to(remaining.dtype)
        free = (r - self.floor * (self.num_blocks - t)).clamp_min(0.0)
        spend = free[:, None] - self.r[None, :]  # (N, R)
        gd = g.double()[:, None]
        cost = self._d(spend.clamp_min(0.0) * gd, t, gd) + self.value[t + 1][None, :]
        cost = cost.masked_fill(spend < 0, math.inf)
        k = cost.argmin(-1)
        p = spend.gather(-1, k[:, None]).squeeze(-1).clamp_min(0.0)
        return (self.floor + p).clamp(max=r).to(remaining.dtype)

    def allocate(self, g: torch.Tensor) -> torch.Tensor:
        """Run the causal policy over gains ``g`` (N, B), block by block -> relative powers (N, B)."""
        remaining = torch.full(g.shape[:-1], float(self.num_blocks), dtype=torch.float64)
        out = []
        for t in range(self.num_blocks):
            p = self.act(t, remaining, g[..., t])
            out.append(p)
            remaining = (remaining - p).clamp_min(0.0)
        return torch.stack(out, -1).to(g.dtype)
