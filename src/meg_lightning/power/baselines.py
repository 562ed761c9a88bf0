"""Reference power allocations for the seed link (paper Sec. IV, eq. 30c).

All three work in the channel layer's units: block powers are RELATIVE to the equal share
``P_max / B`` (equal allocation = all ones, the budget is ``sum_b p_b = B``), ``g_b = |h_b|^2`` and
``snr_db`` is the average SNR of the equal allocation. Their figure of merit is the ``latent_mse``
proxy: the MMSE-equalised distortion of unit-power Gaussian seed symbols, averaged over the B
equal-length blocks,

    D(p, g) = (1/B) sum_b sigma2 / (p_b g_b + sigma2),      sigma2 = 10^(-snr_db/10)

(:func:`meg_lightning.channels.theory.mse_mmse`).

- :func:`equal_power`: ``p_b = 1`` (the paper's "tie" allocation of Fig. 10).
- :func:`oracle_power`: all ``g_b`` known in advance (non-causal); the convex problem
  ``min D s.t. sum p = B, p >= 0`` solved by bisection on the Lagrange multiplier ``mu``: the KKT
  condition ``g sigma2 / (p g + sigma2)^2 = mu`` gives ``p_b = max(0, s/sqrt(gamma_b) - 1/gamma_b)``
  with ``gamma_b = g_b / sigma2`` and ``s = 1/sqrt(mu sigma2)``.
- :class:`CausalDP`: the best causal policy (it sees ``g_1..g_t`` when choosing ``p_t``) for i.i.d.
  Rayleigh fading, by dynamic programming over (block, remaining power) with the expectation over
  ``g ~ Exp(1)`` taken on equal-probability quantiles. This is the optimum PPO should approach.

Expected order of the mean distortion: equal >= causal DP >= oracle. The same allocations act
in the env as registered power policies (:mod:`.policies`).
"""

from __future__ import annotations

import math

import torch

from meg_lightning.channels import theory

__all__ = ["equal_power", "oracle_power", "CausalDP", "proxy_mse"]


def proxy_mse(power: torch.Tensor, g: torch.Tensor, snr_db: float) -> torch.Tensor:
    """Expected latent MSE per symbol ``D(p, g)`` of each episode: ``(N, B), (N, B) -> (N,)``.

    The expectation is over the noise only (the fading ``g`` is given), so comparing policies on
    shared channel draws carries no noise-sampling variance.
    """
    sigma2 = theory.noise_var_from_snr_db(snr_db)
    return theory.mse_mmse(sigma2, power, g).mean(-1)


def equal_power(g: torch.Tensor) -> torch.Tensor:
    """Equal allocation: relative power 1 in every block, ``(N, B) -> (N, B)``."""
    return torch.ones_like(g)


def oracle_power(g: torch.Tensor, snr_db: float, iters: int = 200) -> torch.Tensor:
    """Non-causal MMSE-optimal allocation for known gains ``g`` (N, B) -> relative powers (N, B).

    Bisection on ``t = log s`` (``s`` is the water level above), in float64, vectorised over
    episodes. The total ``sum_b p_b(s)`` increases with ``s``; we look for ``sum = B``.
    """
    num_blocks = g.shape[-1]
    gamma = (g.double() / theory.noise_var_from_snr_db(snr_db)).clamp_min(1e-300)  # (N, B)

    def alloc(s: torch.Tensor) -> torch.Tensor:  # s: (N, 1)
        return (s / gamma.sqrt() - 1.0 / gamma).clamp_min(0.0)

    # s = sqrt(max 1/gamma) * ... : at s_lo every block is off; at s_hi even the worst block gets
    # more than the whole budget alone, so the total exceeds B.
    lo = (1.0 / gamma.sqrt()).min(-1, keepdim=True).values.log()
    hi = (((num_blocks + 1.0 / gamma) * gamma.sqrt()).max(-1, keepdim=True).values).log()
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        over = alloc(mid.exp()).sum(-1, keepdim=True) > num_blocks
        hi = torch.where(over, mid, hi)
        lo = torch.where(over, lo, mid)
    p = alloc(hi.exp())
    p = p * (num_blocks / p.sum(-1, keepdim=True))  # remove the bisection's last ulp of slack
    return p.to(g.dtype)


class CausalDP:
    """Causal optimum of the ``latent_mse`` proxy by dynamic programming (i.i.d. Rayleigh fading).

    ``V_t(r)`` is the least expected sum of block distortions of blocks ``t..B-1`` with remaining
    relative power ``r`` before ``g_t`` is seen:

        V_{B-1}(r) = E_g[ d(r g) ]                                  (the last block spends all)
        V_t(r)     = E_g[ min_{0 <= p <= r} d(p g) + V_{t+1}(r - p) ],   d(x) = sigma2 / (x + sigma2)

    ``r`` lives on a uniform grid of ``grid + 1`` points on [0, B]; the inner minimum chooses the
    next remaining power on that grid; ``E_g`` averages ``quantiles`` equal-probability quantiles
    of Exp(1). :meth:`act` then applies the same minimum to the actual ``g_t`` and any ``r``.

    Args:
        num_blocks: B, the number of fading blocks (episode length).
        snr_db: average SNR of the equal allocation (dB).
        grid: number of intervals of the remaining-power grid (resolution ``B / grid``).
        quantiles: number of Exp(1) quantiles in the expectation over ``g``.
    """

    def __init__(self, num_blocks: int, snr_db: float, grid: int = 400, quantiles: int = 128):
        self.num_blocks, self.snr_db = num_blocks, snr_db
        self.sigma2 = theory.noise_var_from_snr_db(snr_db)
        self.r = torch.linspace(0.0, float(num_blocks), grid + 1, dtype=torch.float64)  # (R,)
        u = (torch.arange(quantiles, dtype=torch.float64) + 0.5) / quantiles
        g = -torch.log1p(-u)  # Exp(1) quantiles, (M,)
        self.value = torch.zeros(num_blocks + 1, grid + 1, dtype=torch.float64)  # V_t(r); V_B = 0
        self.value[num_blocks - 1] = self._d(self.r[None, :] * g[:, None]).mean(0)
        # Going from r_i to r_k (k <= i) spends r_i - r_k = r_{i-k}: the block's distortion depends
        # on i - k only, so min_k d(r_{i-k} g) + V(r_k) is a (min, +) convolution. Its (R, R)
        # cost matrix is a sliding window over one row of R distortions (inf where k > i): one
        # division per (g, j), not per (g, i, k), and no mask (5x faster, the same values).
        R = grid + 1
        for t in range(num_blocks - 2, -1, -1):
            acc = torch.zeros(R, dtype=torch.float64)
            for gc in g.split(32):  # (m,) chunk keeps the (m, R, R) tensor small
                d = self._d(self.r[None, :] * gc[:, None])  # (m, R): d(r_j g)
                # e[q] = d[R-1-q] for q < R, inf after: window s = R-1-i, column k -> d[i-k]
                e = torch.cat([d.flip(1), torch.full((len(gc), R - 1), math.inf,
                                                     dtype=torch.float64)], 1)  # (m, 2R-1)
                cost = e.unfold(1, R, 1) + self.value[t + 1][None, None, :]  # (m, R, R) by s, k
                acc += cost.min(-1).values.flip(-1).sum(0)  # row s = R-1-i -> i
            self.value[t] = acc / len(g)

    def _d(self, pg: torch.Tensor) -> torch.Tensor:
        return self.sigma2 / (pg + self.sigma2)

    @property
    def expected_mse(self) -> float:
        """The DP's own estimate of the mean per-symbol distortion ``V_0(B) / B``."""
        return float(self.value[0, -1]) / self.num_blocks

    def act(self, t: int, remaining: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """Relative power for block ``t`` given remaining relative power and ``g_t``, all (N,)."""
        r = remaining.double().clamp_min(0.0)
        if t >= self.num_blocks - 1:
            return r.to(remaining.dtype)
        spend = r[:, None] - self.r[None, :]  # (N, R)
        cost = self._d(spend.clamp_min(0.0) * g.double()[:, None]) + self.value[t + 1][None, :]
        cost = cost.masked_fill(spend < 0, math.inf)
        k = cost.argmin(-1)
        return spend.gather(-1, k[:, None]).squeeze(-1).clamp_min(0.0).to(remaining.dtype)

    def allocate(self, g: torch.Tensor) -> torch.Tensor:
        """Run the causal policy over gains ``g`` (N, B), block by block -> relative powers (N, B)."""
        remaining = torch.full(g.shape[:-1], float(self.num_blocks), dtype=torch.float64)
        out = []
        for t in range(self.num_blocks):
            p = self.act(t, remaining, g[..., t])
            out.append(p)
            remaining = (remaining - p).clamp_min(0.0)
        return torch.stack(out, -1).to(g.dtype)
