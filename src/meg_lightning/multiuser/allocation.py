"""Allocation across the K users of a frame by a learned policy (`meg train-alloc`).

One frame of ``N = round(users.alloc_fc |z|)`` real channel uses and energy N (unit power per
use) serves K users. Each user u has an average SNR ``snr_u`` (drawn per frame, uniform in dB over
``users.alloc_snr_db``) and, on ``users.alloc_channel=rayleigh``, a Rayleigh gain ``g_u ~ Exp(1)``
constant over the frame (its slot is one fading block); the transmitter knows both (CSI). What
matters of a user is its effective SNR ``gamma_u = g_u snr_u`` at unit power.

**The decision.** TDMA: slot shares ``s_u`` (user u alone in ``s_u N`` uses) and energy shares
``e_u`` (its per-use power ``e_u / s_u``: the per-block power of its slot); both on the simplex,
so the frame never spends more than its energy. NOMA: the users are paired by ``gamma`` (the
strongest with the weakest, :func:`meg_lightning.multiuser.access.pairs`), each pair (and an odd
user alone) gets a slot share and an energy share, and each pair a weak-user power fraction
``p_w``; the two users of a pair use all of the slot's uses. The policy's action is a vector of
logits: shares = softmax, ``p_w = sigmoid(logit(users.noma_power) + a)``, so the zero action is
the equal allocation (equal shares, equal energy, ``p_w = users.noma_power``).

**The quality of a user** is that of the optimal linear analog code (``linear``; the reference
whose distortion is known in closed form at any rate and SNR: :class:`LinearQuality`) at its
symbols and SNR: ``Q_u = 10 log10(sigma_z^2 / D_u)`` dB, the latent signal-to-distortion ratio,
with ``D_u`` the code's expected latent MSE per entry (KLT, MMSE power loading, LMMSE receiver;
exact on AWGN, and on a block known to the transmitter) and ``sigma_z^2`` the latents' variance
per entry. A fractional symbol count is time sharing between the two neighbouring codes. In a NOMA
pair (``P`` the pair's per-use power) the weak user treats the strong seed as Gaussian noise,
``SINR_w = p_w P gamma_w / (p_s P gamma_w + 1)``; the strong user cancels the weak seed
(``users.sic=reencode``, modelled as perfect cancellation: ``SINR_s = p_s P gamma_s``) or hears it
(``lmmse``, which removes nothing: ``SINR_s = p_s P gamma_s / (p_w P gamma_s + 1)``).

**Objectives** (``users.objectives``): ``mean`` (mean of ``Q_u`` over the frame's users) and
``maxmin`` (the worst user's ``Q_u``: fairness). The episode is one frame (a contextual bandit):
one step, reward = the objective.

**Policies compared** on the same held-out frames (:func:`evaluate`): ``equal`` (the zero
action), ``inversion`` (channel inversion: equal slot shares, energy shares giving every user the
same received SNR; NOMA: equal pair slots and energy, ``p_w`` giving both users of a pair the same
SINR), ``best_fixed`` (one action for every frame, users ranked by gamma, found by random search
then gradient refinement on training frames), ``ppo`` (the TorchRL policy of
:func:`meg_lightning.power.train.ppo_train`, its mean action), and ``per_frame`` (gradient ascent
on each held-out frame's own action, started from PPO's: what a per-frame optimiser reaches, the
reference for how much a better policy could still gain).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase
from torch import Tensor
from torchrl.data import Composite, Unbounded
from torchrl.envs import EnvBase

from meg_lightning.config import ALLOC_CHANNELS, OBJECTIVES  # noqa: F401 - re-exported
from meg_lightning.multiuser.access import pairs

POLICY_ORDER = ("equal", "inversion", "best_fixed", "ppo", "per_frame")


class LinearQuality:
    """The optimal linear analog code's expected latent MSE per entry, batched over any number of
    (symbols, SNR) pairs: a source of variances ``eigenvalues`` (all |z| of them) sent in ``m``
    real channel uses at SNR ``snr`` (linear, unit power per use). With ``j`` active components,
    power loading ``p_i = a sqrt(lambda_i) - sigma^2`` (``sum p_i = m``, ``sigma^2 = 1 / snr``)
    gives ``D = (sigma^2 C_j / a + T - L_j) / |z|`` with ``C_j`` the sum of the j largest
    ``sqrt(lambda_i)``, ``L_j`` of the j largest ``lambda_i``, ``T`` the total variance (the closed
    form of :meth:`meg_lightning.codecs.klt.LinearCode.expected_mse`)."""

    def __init__(self, eigenvalues: Any, total_var: Optional[float] = None):
        lam = np.sort(np.clip(np.asarray(eigenvalues, dtype=np.float64).ravel(), 0, None))[::-1]
        self.n = lam.size
        self.lam = torch.as_tensor(lam.copy())
        root = self.lam.sqrt()
        self.root_csum = torch.cumsum(root, 0)  # C_j
        self.lam_csum = torch.cumsum(self.lam, 0)  # L_j
        j = torch.arange(1, self.n + 1, dtype=torch.float64)
        # component j is active at m uses and SNR snr iff m snr > B_j = C_j / sqrt(lambda_j) - j
        # (a_j sqrt(lambda_j) > sigma^2); B_j is non-decreasing, so the active set is a prefix
        self.threshold = torch.where(root > 0, self.root_csum / root.clamp_min(1e-300) - j,
                                     torch.full_like(root, math.inf))
        self.total = float(lam.sum()) if total_var is None else float(total_var)
        self.var = self.total / self.n  # sigma_z^2 per entry

    @classmethod
    def from_latents(cls, z: Tensor) -> "LinearQuality":
        """From training latents (N, ...): the eigenvalues of their covariance (thin SVD)."""
        zf = z.reshape(z.shape[0], -1).double()
        zc = zf - zf.mean(0)
        s = torch.linalg.svdvals(zc)
        lam = torch.zeros(zf.shape[1], dtype=torch.float64)
        lam[:s.numel()] = s.pow(2) / (zf.shape[0] - 1)
        return cls(lam.numpy(), float(zc.pow(2).sum() / (zf.shape[0] - 1)))

    def _mse_int(self, m: Tensor, snr: Tensor) -> Tensor:
        """Integer ``m``: j = min(m, #{B_j < m snr}) active components, and with
        ``a_j = (m + j sigma^2) / C_j`` the kept part
        ``sigma^2 C_j / a_j = C_j^2 / (m snr + j)``."""
        x = m * snr
        j = torch.minimum(torch.searchsorted(self.threshold, x.detach().contiguous()).to(m), m)
        idx = (j.long() - 1).clamp_min(0)
        c, lsum = self.root_csum[idx], self.lam_csum[idx]
        kept = torch.where(j > 0, c * c / (x + j).clamp_min(1e-300), torch.zeros_like(x))
        return (kept + self.total - torch.where(j > 0, lsum, torch.zeros_like(x))) / self.n

    def mse(self, m: Tensor, snr: Tensor) -> Tensor:
        """Expected latent MSE per entry for ``m`` real uses (>= 0, fractional: time sharing) at
        linear SNR ``snr`` (>= 0); broadcast shapes; differentiable in both."""
        m, snr = torch.broadcast_tensors(torch.as_tensor(m, dtype=torch.float64),
                                         torch.as_tensor(snr, dtype=torch.float64))
        m, snr = m.clamp(0, self.n), snr.clamp_min(0)
        lo = torch.floor(m).detach()
        f = m - lo
        # time sharing between the codes of the two neighbouring integer counts
        d = self._mse_int(torch.stack([lo, (lo + 1).clamp_max(self.n)]), snr.expand(2, *snr.shape))
        return (1 - f) * d[0] + f * d[1]

    def quality_db(self, m: Tensor, snr: Tensor) -> Tensor:
        """``10 log10(sigma_z^2 / D)``: the latent signal-to-distortion ratio (dB, >= 0)."""
        return 10 * torch.log10(self.var / self.mse(m, snr).clamp_min(1e-300))


@dataclass(frozen=True)
class FrameSpec:
    """What a frame is: K users, their access, the frame's real channel uses ``n_symbols``, the
    users' average SNR range (dB), the channel kind, the NOMA weak-power default."""

    k: int
    access: str
    n_symbols: int
    snr_db: tuple[float, float]
    channel: str = "rayleigh"
    noma_power: float = 0.8
    sic: str = "reencode"

    @property
    def groups(self) -> list[tuple[int, ...]]:
        """NOMA groups in rank order (rank 0 = the largest gamma): (0, K-1), (1, K-2), ...; TDMA:
        every user alone."""
        if self.access == "tdma":
            return [(u,) for u in range(self.k)]
        return pairs([float(self.k - u) for u in range(self.k)])

    @property
    def group_of(self) -> list[int]:
        """The group (slot) of every user."""
        out = [0] * self.k
        for gi, grp in enumerate(self.groups):
            for u in grp:
                out[u] = gi
        return out

    @property
    def pair_of(self) -> dict[int, tuple[int, bool]]:
        """user -> (its pair's index among the pairs, whether it is the weak one)."""
        out, pair = {}, 0
        for grp in self.groups:
            if len(grp) == 2:
                out[grp[0]], out[grp[1]] = (pair, False), (pair, True)
                pair += 1
        return out

    @property
    def weak_prior(self) -> float:
        """``logit(noma_power)``: the weak-power logit of the zero action (+-20 at 1 and 0)."""
        if self.noma_power >= 1:
            return 20.0
        if self.noma_power <= 0:
            return -20.0
        return math.log(self.noma_power / (1 - self.noma_power))

    @property
    def action_dim(self) -> int:
        g = len(self.groups)
        return 2 * g + sum(len(x) == 2 for x in self.groups)


def draw_frames(spec: FrameSpec, n: int, generator: torch.Generator) -> Tensor:
    """(n, K) effective SNRs ``gamma = g snr`` (linear), sorted descending within each frame."""
    lo, hi = spec.snr_db
    snr_db = lo + (hi - lo) * torch.rand(n, spec.k, generator=generator, dtype=torch.float64)
    gamma = 10 ** (snr_db / 10)
    if spec.channel == "rayleigh":
        gamma = gamma * torch.empty(n, spec.k, dtype=torch.float64).exponential_(
            1.0, generator=generator)
    return gamma.sort(dim=-1, descending=True).values


def allocation(spec: FrameSpec, action: Tensor) -> dict[str, Tensor]:
    """Action logits (..., A) -> {``share``, ``energy``: (..., G) on the simplex; ``weak``:
    (..., number of pairs) weak-user power fractions}."""
    g = len(spec.groups)
    a = action.double()
    out = {"share": torch.softmax(a[..., :g], -1), "energy": torch.softmax(a[..., g:2 * g], -1)}
    out["weak"] = torch.sigmoid(spec.weak_prior + a[..., 2 * g:])
    return out


def user_links(spec: FrameSpec, gamma: Tensor, alloc: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """(..., K) real channel uses and SINR (linear) of every user (rank order)."""
    share = torch.stack([alloc["share"][..., spec.group_of[u]] for u in range(spec.k)], -1)
    energy = torch.stack([alloc["energy"][..., spec.group_of[u]] for u in range(spec.k)], -1)
    received = energy / share.clamp_min(1e-12) * gamma  # per-use power x gamma
    if spec.access == "tdma" or not spec.pair_of:
        return share * spec.n_symbols, received
    own = torch.ones_like(received)
    for u, (pair, weak) in spec.pair_of.items():
        p_w = alloc["weak"][..., pair]
        own[..., u] = p_w if weak else 1 - p_w
    # the weak user always sees the strong seed; the strong user sees the weak one unless it
    # cancels it (users.sic=reencode: modelled as perfect cancellation)
    hears = [u in spec.pair_of and (spec.pair_of[u][1] or spec.sic == "lmmse")
             for u in range(spec.k)]
    other = torch.where(torch.as_tensor(hears), 1 - own, torch.zeros_like(own))
    return share * spec.n_symbols, own * received / (other * received + 1)


def user_quality(spec: FrameSpec, quality: LinearQuality, gamma: Tensor,
                 alloc: dict[str, Tensor]) -> Tensor:
    """(..., K) quality (dB) of every user (rank order) under an allocation."""
    return quality.quality_db(*user_links(spec, gamma, alloc))


def objective(q: Tensor, kind: str) -> Tensor:
    """The frame's objective from its users' qualities (..., K)."""
    return q.mean(-1) if kind == "mean" else q.amin(-1)


def jain(q: Tensor) -> Tensor:
    """Jain's index over the users' (non-negative) qualities, per frame."""
    x = q.clamp_min(0)
    return x.sum(-1) ** 2 / (x.shape[-1] * (x * x).sum(-1)).clamp_min(1e-300)


class AllocationEnv(EnvBase):
    """The allocation as a batched TorchRL environment with a user dimension: N frames per batch,
    one step each. ``observation``: (N, K) ``log10(gamma)`` of the users in rank order;
    ``action``: (N, A) logits (:func:`allocation`); reward: the objective; ``users_q``: (N, K)
    per-user qualities, ``objective`` the reward before scaling."""

    def __init__(self, spec: FrameSpec, quality: LinearQuality, kind: str, *, num_envs: int,
                 seed: int = 0):
        super().__init__(batch_size=torch.Size([num_envs]))
        self.spec, self.quality, self.kind = spec, quality, kind
        self.rng = torch.Generator().manual_seed(seed)
        n, k, a = num_envs, spec.k, spec.action_dim
        self.observation_spec = Composite(
            observation=Unbounded(shape=(n, k)), critic_observation=Unbounded(shape=(n, k)),
            objective=Unbounded(shape=(n,)), users_q=Unbounded(shape=(n, k)), shape=(n,))
        self.action_spec = Unbounded(shape=(n, a))
        self.reward_spec = Unbounded(shape=(n, 1))
        self.full_done_spec = Composite(
            done=Unbounded(shape=(n, 1), dtype=torch.bool),
            terminated=Unbounded(shape=(n, 1), dtype=torch.bool),
            truncated=Unbounded(shape=(n, 1), dtype=torch.bool), shape=(n,))
        self._gamma: Optional[Tensor] = None

    def observe(self, gamma: Tensor) -> Tensor:
        return torch.log10(gamma).float()

    def _reset(self, td: Optional[TensorDictBase] = None, **kwargs: Any) -> TensorDict:
        self._gamma = draw_frames(self.spec, self.batch_size[0], self.rng)
        obs = self.observe(self._gamma)
        n, k = self._gamma.shape
        return TensorDict({"observation": obs, "critic_observation": obs.clone(),
                           "objective": torch.zeros(n), "users_q": torch.zeros(n, k)},
                          batch_size=self.batch_size)

    def _step(self, td: TensorDictBase) -> TensorDict:
        q = user_quality(self.spec, self.quality, self._gamma,
                         allocation(self.spec, td["action"]))
        obj = objective(q, self.kind)
        done = torch.ones(*self.batch_size, 1, dtype=torch.bool)
        obs = self.observe(self._gamma)
        return TensorDict({"observation": obs, "critic_observation": obs.clone(),
                           "reward": obj.float().unsqueeze(-1), "objective": obj.float(),
                           "users_q": q.float(), "done": done, "terminated": done.clone(),
                           "truncated": torch.zeros_like(done)}, batch_size=self.batch_size)

    def _set_seed(self, seed: Optional[int]) -> None:
        if seed is not None:
            self.rng.manual_seed(int(seed))


# -- the reference policies ---------------------------------------------------------------------
def equal_action(spec: FrameSpec, n: int) -> Tensor:
    return torch.zeros(n, spec.action_dim, dtype=torch.float64)


def inversion_action(spec: FrameSpec, gamma: Tensor) -> Tensor:
    """Channel inversion as logits: TDMA energy shares proportional to 1 / gamma_u (equal received
    SNR, equal slots); NOMA equal pair slots and energy, ``p_w`` equalising the pair's SINRs (by
    bisection)."""
    g = len(spec.groups)
    a = torch.zeros(gamma.shape[0], spec.action_dim, dtype=torch.float64)
    if spec.access == "tdma":
        a[:, g:2 * g] = -torch.log(gamma)
        return a
    power = torch.ones(gamma.shape[0], dtype=torch.float64)  # equal slots and energy: P = 1
    pair = 0
    for grp in spec.groups:
        if len(grp) == 1:
            continue
        gs, gw = power * gamma[:, grp[0]], power * gamma[:, grp[1]]
        lo, hi = torch.zeros_like(gs), torch.ones_like(gs)
        hear = 1.0 if spec.sic == "lmmse" else 0.0  # the strong user hears the weak seed
        for _ in range(60):  # SINR_w rises and SINR_s falls with p_w
            mid = (lo + hi) / 2
            diff = mid * gw / ((1 - mid) * gw + 1) - (1 - mid) * gs / (hear * mid * gs + 1)
            lo, hi = torch.where(diff < 0, mid, lo), torch.where(diff < 0, hi, mid)
        p = ((lo + hi) / 2).clamp(1e-9, 1 - 1e-9)
        a[:, 2 * g + pair] = torch.log(p / (1 - p)) - spec.weak_prior
        pair += 1
    return a


def optimise_actions(spec: FrameSpec, quality: LinearQuality, gamma: Tensor, kind: str,
                     start: Tensor, steps: int = 200, lr: float = 0.05,
                     shared: bool = False) -> Tensor:
    """Gradient ascent (Adam) on the objective over action logits: one action per frame, or one
    ``shared`` by all frames (its mean objective); returns the best actions seen."""
    a = start.clone().double().requires_grad_(True)
    opt = torch.optim.Adam([a], lr=lr)
    best = start.clone().double()
    with torch.no_grad():
        best_val = objective(user_quality(spec, quality, gamma, allocation(spec, a.expand(
            gamma.shape[0], -1) if shared else a)), kind)
        best_val = best_val.mean().reshape(1) if shared else best_val
    for _ in range(steps):
        act = a.expand(gamma.shape[0], -1) if shared else a
        val = objective(user_quality(spec, quality, gamma, allocation(spec, act)), kind)
        val = val.mean().reshape(1) if shared else val
        with torch.no_grad():
            better = val > best_val
            best = torch.where(better.unsqueeze(-1), a.detach(), best)
            best_val = torch.where(better, val.detach(), best_val)
        opt.zero_grad()
        (-val.sum()).backward()
        opt.step()
    return best


def best_fixed_action(spec: FrameSpec, quality: LinearQuality, gamma: Tensor, kind: str,
                      candidates: int = 256, generator: Optional[torch.Generator] = None
                      ) -> Tensor:
    """One action for every frame (users by rank): the best of ``candidates`` random logit
    vectors (and the zero action) on the training frames ``gamma``, refined by gradient ascent
    on their mean objective. (A,)"""
    gen = generator or torch.Generator().manual_seed(0)
    cands = torch.cat([torch.zeros(1, spec.action_dim, dtype=torch.float64),
                       1.5 * torch.randn(candidates, spec.action_dim, dtype=torch.float64,
                                         generator=gen)])
    with torch.no_grad():  # all candidates on all frames at once: (C, n)
        vals = objective(user_quality(spec, quality, gamma.expand(len(cands), *gamma.shape),
                                      allocation(spec, cands[:, None, :].expand(
                                          -1, gamma.shape[0], -1))), kind).mean(-1)
    start = cands[int(vals.argmax())].unsqueeze(0)
    return optimise_actions(spec, quality, gamma, kind, start, shared=True)[0]


def evaluate(spec: FrameSpec, quality: LinearQuality, gamma: Tensor, kind: str,
             actions: dict[str, Tensor]) -> dict[str, dict[str, Tensor]]:
    """Per-frame objective, per-user qualities and Jain's index of every policy's actions
    ((n, A), or (A,) for one shared by all frames) on the held-out frames ``gamma``."""
    out = {}
    for name, act in actions.items():
        act = act.expand(gamma.shape[0], -1) if act.ndim == 1 else act
        with torch.no_grad():
            q = user_quality(spec, quality, gamma, allocation(spec, act))
        out[name] = {"objective": objective(q, kind), "users_q": q, "jain": jain(q)}
    return out


def summarise(results: dict[str, dict[str, Tensor]], mean_ci: Callable[[Tensor], tuple],
              reference: str = "equal") -> list[dict[str, Any]]:
    """One row per policy: objective mean and 95% interval, its paired difference to
    ``reference`` (and to ``best_fixed``) with intervals, worst and mean user quality, Jain."""
    rows = []
    for name in sorted(results, key=lambda n: POLICY_ORDER.index(n) if n in POLICY_ORDER else 99):
        r = results[name]
        m, lo, hi = mean_ci(r["objective"])
        row = {"policy": name, "objective_db": m, "objective_lo": lo, "objective_hi": hi,
               "mean_user_db": float(r["users_q"].mean()),
               "worst_user_db": float(r["users_q"].amin(-1).mean()),
               "jain": float(r["jain"].mean())}
        for ref in (reference, "best_fixed"):
            if ref in results and ref != name:
                d, dlo, dhi = mean_ci(r["objective"] - results[ref]["objective"])
                row.update({f"vs_{ref}_db": d, f"vs_{ref}_lo": dlo, f"vs_{ref}_hi": dhi})
        rows.append(row)
    return rows


def spec_from(users: Any, access: str, n_symbols: int) -> FrameSpec:
    return FrameSpec(k=int(users.k), access=access, n_symbols=int(n_symbols),
                     snr_db=(float(users.alloc_snr_db[0]), float(users.alloc_snr_db[1])),
                     channel=users.alloc_channel, noma_power=float(users.noma_power),
                     sic=users.sic)
