"""Seed transmission power control (paper Sec. IV): the TorchRL env, PPO and the baselines.

- :class:`MEGPowerEnv` (:mod:`.env`): the batched MDP of eqs. 31-34 over B fading blocks.
- :mod:`.train`: ``meg train-ppo`` (PPO, Algorithm 3).
- :mod:`.baselines`: equal power, the non-causal oracle and the causal DP optimum.
- :mod:`.evaluate`: shared-draw policy comparison and the Fig. 10 sweep (CSV).
"""

from meg_lightning.power.baselines import (CausalDP, DPPolicy, EqualPolicy, OraclePolicy,
                                           equal_power, oracle_power, proxy_mse)
from meg_lightning.power.env import (GaussianSeeds, LatentSeeds, MEGPowerEnv, make_env,
                                     make_source, snr_from_budget)

__all__ = ["MEGPowerEnv", "GaussianSeeds", "LatentSeeds", "make_env", "make_source",
           "snr_from_budget", "CausalDP", "DPPolicy", "EqualPolicy", "OraclePolicy",
           "equal_power", "oracle_power", "proxy_mse"]
