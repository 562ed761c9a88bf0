"""Power policies: who decides each block's share of the power budget (paper Sec. IV), registered
by name (``equal``, ``oracle``, ``causal_dp`` and the learned ``ppo``; :data:`POLICIES`).

A policy acts in :class:`~meg_lightning.power.env.MEGPowerEnv` like TorchRL's policies: it reads
the TensorDict of block t and sets ``action``, the fraction of P_max spent on that block (the env
caps it by what remains and spends the rest on the last block). Evaluation
(:func:`~meg_lightning.power.evaluate.evaluate_policies`) and Fig. 10
(:mod:`meg_lightning.power.sweep`) take every policy from here by name.
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar, Optional

import torch
from tensordict import TensorDictBase

from meg_lightning.power.baselines import CausalDP, oracle_power
from meg_lightning.power.env import MEGPowerEnv
from meg_lightning.registry import Registry

#: every power policy, by name (``ppo.policies`` of Fig. 10)
POLICIES: Registry = Registry("power policy", "ppo.policies")


class PowerPolicy:
    """A registered power policy: ``build(env, cfg)`` makes it for one env, ``policy(td)`` acts.

    - ``causal``: it sees only the gains of the blocks so far (the oracle sees all of them);
    - ``learned``: it is trained (``meg train-ppo``) and loaded from a checkpoint;
    - ``mmse_model``: it is optimal for the MMSE-equalised Gaussian proxy only, so it is offered
      for envs with an MMSE receiver (the DP and the oracle).
    """

    name: ClassVar[str] = ""
    order: ClassVar[int] = 0
    causal: ClassVar[bool] = True
    learned: ClassVar[bool] = False
    mmse_model: ClassVar[bool] = False

    @classmethod
    def build(cls, env: MEGPowerEnv, cfg: Any = None) -> "PowerPolicy":
        return cls(env)

    def __init__(self, env: MEGPowerEnv):
        self.num_blocks, self.snr_db = env.num_blocks, env.snr_db

    def __call__(self, td: TensorDictBase) -> TensorDictBase:
        raise NotImplementedError

    def eval(self) -> "PowerPolicy":
        """Act deterministically (a learned policy's mode); the others always do."""
        return self


@POLICIES.register("equal")
class EqualPolicy(PowerPolicy):
    """Equal power (the paper's "tie" allocation): ``a_t = 1/B`` every block."""

    order = 0

    def __call__(self, td):
        return td.set("action", torch.full_like(td["budget"], 1.0 / self.num_blocks))


@POLICIES.register("causal_dp")
class DPPolicy(PowerPolicy):
    """The causal optimum of the proxy by dynamic programming (:class:`CausalDP`): reads only
    ``g`` (g_t), ``budget`` and ``step``."""

    order = 1
    mmse_model = True

    def __init__(self, env: MEGPowerEnv):
        super().__init__(env)
        self.dp = causal_dp(env.num_blocks, env.snr_db)

    def __call__(self, td):
        B = self.num_blocks
        t = int(td["step"].flatten()[0])  # episodes are synchronous: one block index per batch
        p = self.dp.act(t, td["budget"].squeeze(-1) * B, td["g"].squeeze(-1))
        return td.set("action", (p / B).unsqueeze(-1).to(td["budget"].dtype))


@POLICIES.register("oracle")
class OraclePolicy(PowerPolicy):
    """The non-causal oracle: it peeks at the gains of all B blocks (the env's hidden state) and
    water-fills them (:func:`oracle_power`)."""

    order = 2
    causal = False
    mmse_model = True

    def __init__(self, env: MEGPowerEnv):
        super().__init__(env)
        self.block_gains = env.block_gains

    def __call__(self, td):
        g = self.block_gains(td["fading"])  # (N, B)
        p = oracle_power(g, self.snr_db) / self.num_blocks  # fractions of P_max
        t = td["step"].clamp(max=self.num_blocks - 1)  # (N, 1)
        return td.set("action", p.gather(1, t).to(td["budget"].dtype))


@functools.lru_cache(maxsize=16)
def causal_dp(num_blocks: int, snr_db: float) -> CausalDP:
    """The DP tables depend only on (B, SNR): build each once per process (~2 s)."""
    return CausalDP(num_blocks, snr_db)


def baseline_policies(env: MEGPowerEnv, names: Optional[list[str]] = None) -> dict[str, PowerPolicy]:
    """The registered policies that need no training (``names``: a subset), those with an MMSE
    model only when the env's receiver is MMSE."""
    out = {}
    for name, cls in POLICIES.items():
        if cls.learned or (names is not None and name not in names):
            continue
        if cls.mmse_model and env.equalizer != "mmse":
            continue
        out[name] = cls.build(env)
    return out
