"""Seed transmission power control (paper Sec. IV): the TorchRL env, the registered power policies,
PPO and the Fig. 10 sweep.

- :class:`MEGPowerEnv` (:mod:`.env`): the batched MDP of eqs. 31-34 over B fading blocks.
- :mod:`.policies`: the registry of power policies (equal, causal DP, oracle; PPO registers in
  :mod:`.train`) and :mod:`.baselines`, their closed forms.
- :mod:`.train`: PPO (Algorithm 3); :mod:`.evaluate`: shared-draw policy comparison;
  :mod:`.sweep`: ``meg train-ppo`` and the Fig. 10 sweep (CSV).
"""

from meg_lightning.power.baselines import CausalDP, equal_power, oracle_power, proxy_mse
from meg_lightning.power.env import (
    GaussianSeeds,
    LatentSeeds,
    MEGPowerEnv,
    make_env,
    make_source,
    snr_from_budget,
)
from meg_lightning.power.policies import (
    POLICIES,
    DPPolicy,
    EqualPolicy,
    OraclePolicy,
    PowerPolicy,
    baseline_policies,
)
from meg_lightning.power.train import PPOPolicy

__all__ = ["MEGPowerEnv", "GaussianSeeds", "LatentSeeds", "make_env", "make_source",
           "snr_from_budget", "CausalDP", "POLICIES", "PowerPolicy", "DPPolicy", "EqualPolicy",
           "OraclePolicy", "PPOPolicy", "baseline_policies", "equal_power", "oracle_power",
           "proxy_mse"]
