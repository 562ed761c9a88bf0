"""Power policies: who decides each block's share of the power budget (paper Sec. IV), registered
by name (``equal``, ``oracle``, ``causal_dp`` and the learned ``ppo``; :data:`POLICIES`).

A policy acts in :class:`~meg_lightning.power.env.MEGPowerEnv` like TorchRL's policies: it reads
the TensorDict of block t and sets ``action``, the fraction of P_max spent on that block (the env
caps it by what remains and spends the rest on the last block). Evaluation
(:func:`~meg_lightning.power.evaluate.evaluate_policies`) and Fig. 10
(:mod:`meg_lightning.power.sweep`) take every policy from here by name.
"""

from __future__ import annotations

from typing import Any, ClassVar, Optional

import torch
from tensordict import TensorDictBase

from meg_lightning.power.baselines import CausalDP, LinkModel, oracle_power
from meg_lightning.power.env import MEGPowerEnv
from meg_lightning.registry import Registry

#: every power policy, by name (``ppo.policies`` of Fig. 10)
POLICIES: Registry = Registry("power policy", "ppo.policies")


class PowerPolicy:
    """A registered power policy: ``build(env, cfg)`` makes it for one env, ``policy(td)`` acts.

    - ``causal``: it sees only the gains of the blocks so far (the oracle sees all of them);
    - ``learned``: it is trained (``meg train-ppo``) and loaded from a checkpoint;
    - ``model_based``: it optimises the env's link model (:attr:`MEGPowerEnv.link_model`) and
      needs an env with one average SNR.
    """

    name: ClassVar[str] = ""
    order: ClassVar[int] = 0
    causal: ClassVar[bool] = True
    learned: ClassVar[bool] = False
    model_based: ClassVar[bool] = False

    @classmethod
    def build(cls, env: MEGPowerEnv, cfg: Any = None) -> "PowerPolicy":
        return cls(env)

    def __init__(self, env: MEGPowerEnv):
        self.num_blocks = env.num_blocks

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
    """The causal optimum of the env's link model by dynamic programming (:class:`CausalDP`):
    reads only ``g`` (g_t), ``budget`` and ``step``."""

    order = 1
    model_based = True

    def __init__(self, env: MEGPowerEnv):
        super().__init__(env)
        self.dp = causal_dp(env.num_blocks, env.snr_db, env.link_model, env.min_power)

    def __call__(self, td):
        B = self.num_blocks
        t = int(td["step"].flatten()[0])  # episodes are synchronous: one block index per batch
        p = self.dp.act(t, td["budget"].squeeze(-1) * B, td["g"].squeeze(-1))
        return td.set("action", (p / B).unsqueeze(-1).to(td["budget"].dtype))


@POLICIES.register("oracle")
class OraclePolicy(PowerPolicy):
    """The non-causal oracle: it peeks at the gains of all B blocks (the env's hidden state) and
    water-fills them for the env's link model (:func:`oracle_power`), once per episode."""

    order = 2
    causal = False
    model_based = True

    def __init__(self, env: MEGPowerEnv):
        super().__init__(env)
        self.block_gains, self.snr_db = env.block_gains, env.snr_db
        self.model, self.min_power = env.link_model, env.min_power
        self._plan: Optional[torch.Tensor] = None

    def __call__(self, td):
        t = td["step"].clamp(max=self.num_blocks - 1)  # (N, 1)
        if self._plan is None or int(t.min()) == 0:  # a new episode: plan its B blocks
            g = self.block_gains(td["fading"])  # (N, B)
            self._plan = oracle_power(g, self.snr_db, model=self.model,
                                      min_power=self.min_power) / self.num_blocks
        return td.set("action", self._plan.gather(1, t).to(td["budget"].dtype))


_DP_CACHE: dict[tuple, CausalDP] = {}


def causal_dp(num_blocks: int, snr_db: float, model: Optional[LinkModel] = None,
              min_power: float = 0.0) -> CausalDP:
    """The DP tables depend only on (B, SNR, the link model, the floor): build each once per
    process (~2 s)."""
    key = (num_blocks, float(snr_db), float(min_power),
           None if model is None else (model.weight.numpy().tobytes(),
                                       model.energy.numpy().tobytes()))
    if key not in _DP_CACHE:
        if len(_DP_CACHE) >= 32:
            _DP_CACHE.pop(next(iter(_DP_CACHE)))
        _DP_CACHE[key] = CausalDP(num_blocks, snr_db, model=model, min_power=min_power)
    return _DP_CACHE[key]


def baseline_policies(env: MEGPowerEnv, names: Optional[list[str]] = None) -> dict[str, PowerPolicy]:
    """The registered policies that need no training (``names``: a subset); the model-based ones
    only for an env with one average SNR."""
    out = {}
    for name, cls in POLICIES.items():
        if cls.learned or (names is not None and name not in names):
            continue
        if cls.model_based and not env.fixed_snr:
            continue
        out[name] = cls.build(env)
    return out
