"""`meg train-ppo`: PPO for seed power allocation (paper Sec. IV-C, Algorithm 3, eqs. 35-40).

One straight script. The actor reads the causal state of eq. 31, ``observation`` = [g_t,
log10 g_t, remaining budget, remaining budget per block left, t/B, average SNR, seed summary]; the
critic also reads the received SNR of the blocks already sent and the gains of all blocks (see
``CRITIC_KEYS``). Two action parameterisations (``ppo.action``):

- ``residual`` (default): a Gaussian ``delta`` moves the equal share of what remains: block t
  spends the fraction ``sigmoid(logit(1 / (B - t)) + delta)`` of the power left above the floors
  (:class:`ResidualAction`). ``delta = 0`` is exactly equal power, so training starts from the
  tie allocation, every action is feasible, and the last block spends the rest by construction.
- ``absolute``: the paper's eq. 32, a tanh-squashed Gaussian ``a_t`` on [0, 1], the fraction of
  P_max, started near ``1/B``.

Rewards are divided by the magnitude of the equal-power reward (measured once on a training
batch), so the terminal reward is O(1) for every reward kind and SNR; advantages are normalised
per minibatch; the learning rate decays linearly to 0.

Outputs under ``{out_dir}/ppo/``: ``checkpoint.pt`` (written atomically after every batch; a rerun
resumes from it), ``config.yaml``, ``eval.json`` (held-out comparison with the baselines) and the
logger's files (``logs/``).
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Optional

import torch
from tensordict.nn import NormalParamExtractor, TensorDictModule, TensorDictSequential
from torch import nn
from torch.distributions import Normal
from torchrl.collectors import Collector
from torchrl.data import LazyTensorStorage, ReplayBuffer
from torchrl.data.replay_buffers.samplers import SamplerWithoutReplacement
from torchrl.envs import CatTensors, Compose, EnvBase, RewardScaling, TransformedEnv
from torchrl.modules import MLP, ProbabilisticActor, TanhNormal, ValueOperator
from torchrl.objectives import ClipPPOLoss
from torchrl.objectives.value import GAE
from torchrl.record.loggers import CSVLogger, TensorboardLogger, WandbLogger
from tqdm.auto import tqdm

from meg_lightning.config import MegConfig, config_hash, save_resolved, to_dict
from meg_lightning.errors import ConfigError, UserError
from meg_lightning.io import atomic_path, atomic_write_json, clean_tmp
from meg_lightning.loggers import wandb_mode
from meg_lightning.power.env import MEGPowerEnv, make_env, make_source
from meg_lightning.power.evaluate import evaluate_policies, standard_policies
from meg_lightning.power.policies import POLICIES, EqualPolicy, PowerPolicy
from meg_lightning.runtime import torch_threads

OBS_KEYS = ("g", "log_g", "budget", "share", "t", "snr", "seed")  # the policy's s_t (eq. 31)
# The critic also reads (1) the received SNR of the blocks already sent and (2) the gains of ALL
# B blocks. The reward comes only at the end (eq. 34) and sums the distortion of every block, so
# V(s_t) alone can predict neither the part already incurred nor the luck of the blocks to come,
# and that unexplained variance swamps the effect of one action. The fading is an exogenous input
# process that no action changes, so a baseline that knows it keeps the policy gradient unbiased
# (input-driven baselines, Mao et al., ICLR 2019) while removing most of its variance. The actor
# keeps the causal state of eq. 31.
CRITIC_KEYS = (*OBS_KEYS, "history", "gains")
LOG_KEYS = ("loss_objective", "loss_critic", "loss_entropy", "explained_variance", "kl_approx",
            "clip_fraction")
# PPO settings that change the networks: a checkpoint with other values cannot be resumed.
ARCH_KEYS = ("num_blocks", "seed_features", "hidden", "action")


def run_dir(cfg: MegConfig) -> Path:
    return Path(cfg.out_dir) / "ppo"


def wrap_env(env: MEGPowerEnv, reward_scale: float = 1.0) -> TransformedEnv:
    """The env as the agent sees it: ``observation`` concatenated, rewards multiplied by a scale."""
    return TransformedEnv(env, Compose(
        CatTensors(in_keys=list(OBS_KEYS), out_key="observation", del_keys=False),
        CatTensors(in_keys=list(CRITIC_KEYS), out_key="critic_observation", del_keys=False),
        RewardScaling(loc=0.0, scale=reward_scale)))


class ResidualAction(nn.Module):
    """``delta`` -> ``action`` (the fraction of P_max block t spends): the share
    ``sigmoid(logit(1 / left) + delta)`` of the power above the floors of the ``left`` blocks
    still to send, plus this block's floor. ``delta = 0`` is equal power; the last block
    (``left = 1``) spends all that remains."""

    def __init__(self, num_blocks: int, min_power: float = 0.0):
        super().__init__()
        self.num_blocks, self.floor = num_blocks, min_power / num_blocks

    def forward(self, delta: torch.Tensor, budget: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        left = (self.num_blocks - torch.round(t * self.num_blocks)).clamp_min(1.0)  # (N, 1)
        free = (budget - self.floor * left).clamp_min(0.0)
        prior = -torch.log((left - 1.0).clamp_min(1e-6))  # logit(1 / left)
        q = torch.where(left <= 1.0, torch.ones_like(delta), torch.sigmoid(prior + delta))
        return torch.minimum(self.floor + q * free, budget)



def gaussian_params(obs_dim: int, act_dim: int, hidden: int, loc: float = 0.0,
                    in_key: str = "observation") -> TensorDictModule:
    """``in_key`` -> (``loc``, ``scale``) of a diagonal Gaussian over ``act_dim`` actions: a tanh
    MLP (two hidden layers) whose last layer starts near zero, so every action starts at ``loc``
    with scale ~0.5 whatever the observation."""
    mlp = MLP(in_features=obs_dim, out_features=2 * act_dim, num_cells=[hidden, hidden],
              activation_class=nn.Tanh)
    last = mlp[-1]
    with torch.no_grad():
        last.weight.mul_(0.01)
        last.bias.zero_()
        last.bias[:act_dim] = loc
    net = nn.Sequential(mlp, NormalParamExtractor(scale_mapping="biased_softplus_0.5"))
    return TensorDictModule(net, in_keys=[in_key], out_keys=["loc", "scale"])


def build_models(cfg: MegConfig, env: EnvBase) -> tuple[Any, ValueOperator, Any]:
    """(loss actor, critic, acting policy): the actor pi(. | s) whose log-probabilities the PPO
    loss reads (a distribution over ``delta`` or ``action``), the critic V(s), and the policy
    that sets ``action`` (the actor, followed by :class:`ResidualAction` for ``residual``)."""

    obs_dim = env.observation_spec["observation"].shape[-1]
    h, B = cfg.ppo.hidden, cfg.ppo.num_blocks
    residual = cfg.ppo.action == "residual"
    # residual: delta ~ N(0, ~0.5), equal power with a moderate spread. absolute: start near the
    # tie allocation a = 1/B (tanh(loc) = 2/B - 1 on [0, 1]); a uniform random start spends the
    # budget in the first blocks
    params = gaussian_params(obs_dim, 1, h, loc=0.0 if residual else (
        math.atanh(2.0 / B - 1.0) if B > 1 else 3.0))
    if residual:
        actor = ProbabilisticActor(params, in_keys=["loc", "scale"], out_keys=["delta"],
                                   distribution_class=Normal, return_log_prob=True)
        base = env.base_env if hasattr(env, "base_env") else env
        to_action = TensorDictModule(ResidualAction(B, getattr(base, "min_power", 0.0)),
                                     in_keys=["delta", "budget", "t"], out_keys=["action"])
        policy = TensorDictSequential(actor, to_action)
    else:
        actor = ProbabilisticActor(params, in_keys=["loc", "scale"], spec=env.action_spec,
                                   distribution_class=TanhNormal,
                                   distribution_kwargs={"low": 0.0, "high": 1.0},
                                   return_log_prob=True)
        policy = actor
    critic_dim = env.observation_spec["critic_observation"].shape[-1]
    critic = ValueOperator(
        MLP(in_features=critic_dim, out_features=1, num_cells=[h, h], activation_class=nn.Tanh),
        in_keys=["critic_observation"])
    return actor, critic, policy


def equal_power_reward(env: MEGPowerEnv) -> float:
    """Mean terminal reward of equal power on one batch of ``env`` (the reward's natural scale)."""

    td = env.rollout(env.num_blocks, EqualPolicy(env))
    return float(td["next", "reward"][:, -1].mean())


def make_logger(cfg: MegConfig, folder: Path, name: str) -> Any:
    """A TorchRL logger for ``cfg.logger`` (None for ``none``); W&B honours ``WANDB_MODE``."""
    if cfg.logger == "none":
        return None

    folder.mkdir(parents=True, exist_ok=True)
    if cfg.logger == "csv":
        return CSVLogger(exp_name=name, log_dir=str(folder))
    if cfg.logger == "tensorboard":
        return TensorboardLogger(exp_name=name, log_dir=str(folder))


    os.environ.setdefault("WANDB_SILENT", "true")
    mode = wandb_mode(cfg)
    return WandbLogger(exp_name=name, offline=mode == "offline", save_dir=str(folder),
                       project=cfg.wandb.project, entity=cfg.wandb.entity, mode=mode,
                       config=to_dict(cfg), log_env_packages=False)


def load_checkpoint(path: Path, cfg: MegConfig) -> dict[str, Any]:
    """A training checkpoint, after checking it was made with the same networks."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - an unreadable file is the user's to fix
        raise UserError(f"PPO checkpoint {str(path)!r} could not be read ({type(e).__name__}); "
                        "expected a checkpoint.pt written by `meg train-ppo`") from None
    if ckpt.get("observation") != list(OBS_KEYS):
        raise UserError(f"PPO checkpoint {str(path)!r} was trained on another observation "
                        f"({ckpt.get('observation') or 'an older one'}, now {list(OBS_KEYS)}): "
                        "train again in another out_dir")
    saved = ckpt.get("config", {}).get("ppo", {})
    for k in ARCH_KEYS:
        if k in saved and saved[k] != getattr(cfg.ppo, k):
            raise ConfigError(f"ppo.{k}", getattr(cfg.ppo, k),
                              f"{saved[k]!r} to resume {str(path)!r} (or another out_dir)")
    return ckpt


def main(cfg: MegConfig) -> dict[str, Any]:
    # The networks are tiny: on a shared CPU extra intra-op threads cost far more than they
    # save (measured ~10x slower updates with 2 threads on the 2-core test machine).
    with torch_threads(1):
        return _main(cfg)


def _main(cfg: MegConfig) -> dict[str, Any]:
    p = cfg.ppo
    folder = run_dir(cfg)
    torch.manual_seed(cfg.seed)
    ckpt_path = Path(p.checkpoint) if p.checkpoint else folder / "checkpoint.pt"
    ckpt = load_checkpoint(ckpt_path, cfg) if ckpt_path.is_file() else None
    if p.checkpoint and ckpt is None:
        raise UserError(f"ppo.checkpoint={p.checkpoint!r} not found: expected a checkpoint.pt "
                        "written by `meg train-ppo` (or leave it unset to start fresh)")
    run_id = finished_id(cfg)
    finished = _finished(folder, run_id, bool(p.fig10_powers)) if ckpt and not p.checkpoint else None
    if finished is not None and ckpt["frames"] >= p.total_frames:
        print(f"train-ppo: {str(ckpt_path)!r} has trained all {ckpt['frames']} frames and "
              f"{str(folder / 'eval.json')!r} holds its evaluation (nothing to do; raise "
              "ppo.total_frames to train on)")
        return finished

    # Create the environments (training batches and the held-out evaluation share one source;
    # building it checks the latent cache and the codec before anything is written)
    source = make_source(cfg)
    train_snr = list(p.train_snr_db) if p.train_snr_db is not None else None
    base_env = make_env(cfg, source=source, seed=cfg.seed, snr_db=train_snr)
    reward_scale = ckpt["reward_scale"] if ckpt else 1.0 / max(abs(equal_power_reward(base_env)), 1e-12)
    env = wrap_env(base_env, reward_scale)
    folder.mkdir(parents=True, exist_ok=True)
    clean_tmp(folder)
    save_resolved(cfg, folder)

    # Create the models, the logger, then train
    actor, critic, policy = build_models(cfg, env)
    logger = make_logger(cfg, folder / "logs", f"ppo-{config_hash(p)}")
    frames_done, train_seconds = ppo_train(
        env, base_env, actor, critic, policy, p, folder=folder, seed=cfg.seed,
        episode_len=p.num_blocks, ckpt=ckpt, logger=logger, desc="train-ppo",
        track="latent_mse", what=f"ppo.reward={p.reward!r}",
        extra={"reward_scale": reward_scale, "config": to_dict(cfg),
               "observation": list(OBS_KEYS)})

    results = held_out(cfg, source, policy)
    results["train_seconds"] = train_seconds
    results["frames"] = frames_done
    if logger is not None:
        for name, r in results["policies"].items():
            for k, v in r.items():
                logger.log_scalar(f"eval/{name}/{k}", v, step=frames_done)
        if results.get("gap_closed") is not None:
            logger.log_scalar("eval/gap_closed", results["gap_closed"], step=frames_done)
    results["run_id"] = run_id
    atomic_write_json(folder / "eval.json", _json_safe(results))
    print(summary_line(results, frames_done, train_seconds))
    return results



def ppo_train(env: EnvBase, base_env: Any, actor: Any, critic: ValueOperator, policy: Any,
              p: Any, *, folder: Path, seed: int, episode_len: int,
              ckpt: Optional[dict[str, Any]] = None, logger: Any = None, desc: str = "ppo",
              track: str = "latent_mse", what: str = "the reward",
              extra: Optional[dict[str, Any]] = None) -> tuple[int, float]:
    """The PPO loop of Algorithm 3 (clipped objective, GAE, minibatch epochs, linear learning-rate
    decay) on a batched env whose episodes all last ``episode_len`` steps; returns (frames
    trained, seconds). Settings ``p``: the fields of ``PPOConfig`` it reads (``total_frames``,
    ``frames_per_batch``, ``num_envs``, ``minibatch_size``, ``num_epochs``, ``lr``, ``gamma``,
    ``lmbda``, ``clip_epsilon``, ``entropy_coef``, ``critic_coef``).

    After every batch ``{folder}/checkpoint.pt`` is written atomically (actor, critic, optimiser,
    frames and ``extra``); with ``ckpt`` (such a checkpoint) the run resumes where it stopped and
    collects and updates exactly as the uninterrupted run would: batch k's randomness (the env's
    ``rng``, actions, minibatches) comes from (seed, k) alone. ``track``: the env's per-episode
    key shown on the progress bar and logged; ``what`` names the reward in the non-finite error.
    """
    if ckpt:
        actor.load_state_dict(ckpt["actor"])
        critic.load_state_dict(ckpt["critic"])
    frames_done = ckpt["frames"] if ckpt else 0
    episode = p.num_envs * episode_len  # a batch holds whole episodes of the N envs
    frames_per_batch = max(p.frames_per_batch // episode, 1) * episode
    remaining = max(p.total_frames - frames_done, 0)
    collector = None
    if remaining > 0:
        # the actor is a plain MLP of the current observation: no recurrent-state transforms
        collector = Collector(env, policy, frames_per_batch=frames_per_batch,
                              total_frames=math.ceil(remaining / frames_per_batch) * frames_per_batch,
                              auto_register_policy_transforms=False, reset_at_each_iter=True)
    loss_module = ClipPPOLoss(actor, critic, clip_epsilon=p.clip_epsilon,
                              entropy_bonus=p.entropy_coef > 0, entropy_coeff=p.entropy_coef,
                              critic_coeff=p.critic_coef, loss_critic_type="l2",
                              normalize_advantage=True)
    advantage = GAE(gamma=p.gamma, lmbda=p.lmbda, value_network=critic, average_gae=False)
    minibatch = min(p.minibatch_size, frames_per_batch)
    optim = torch.optim.Adam(loss_module.parameters(), lr=p.lr)
    if ckpt:
        optim.load_state_dict(ckpt["optim"])

    def reseed(batch_index: int) -> None:
        s = int(config_hash({"seed": seed, "batch": batch_index}), 16) % 2**62
        torch.manual_seed(s)
        base_env.rng.manual_seed(s + 1)

    def update(batch, frames: int) -> dict[str, float]:
        """Algorithm 3 lines 19-22: num_epochs passes of minibatch PPO over one collected batch."""
        # linear learning-rate decay to 0 at total_frames: the late, small steps fine-tune the
        # allocation (a constant rate leaves the policy jittering around the optimum)
        for group in optim.param_groups:
            group["lr"] = p.lr * max(1.0 - frames / p.total_frames, 0.0)
        stats: dict[str, list[float]] = {"lr": [optim.param_groups[0]["lr"]]}
        # a fresh minibatch sampler per batch: one kept across batches draws its next
        # permutation during the previous batch, so a resumed run would sample other minibatches
        buffer = ReplayBuffer(storage=LazyTensorStorage(frames_per_batch),
                              sampler=SamplerWithoutReplacement(), batch_size=minibatch)
        for _ in range(p.num_epochs):
            with torch.no_grad():
                advantage(batch)  # GAE with the current critic (values refreshed each epoch)
            buffer.extend(batch.reshape(-1))
            for _ in range(frames_per_batch // minibatch):
                mb = buffer.sample()
                losses = loss_module(mb)
                loss = sum(v for k, v in losses.items() if k.startswith("loss_"))  # eq. 37
                optim.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(loss_module.parameters(), 1.0)
                optim.step()
                for k in LOG_KEYS:
                    if k in losses.keys():
                        stats.setdefault(k, []).append(float(losses[k].detach().mean()))
        return {k: sum(v) / max(len(v), 1) for k, v in stats.items()}

    def save(frames: int) -> None:
        with atomic_path(folder / "checkpoint.pt") as tmp:
            torch.save({"actor": actor.state_dict(), "critic": critic.state_dict(),
                        "optim": optim.state_dict(), "frames": frames, **(extra or {})}, tmp)

    t0 = time.perf_counter()
    bar = tqdm(total=frames_done + (collector.total_frames if collector else 0), initial=frames_done,
               unit="frame", desc=desc, dynamic_ncols=True)
    reseed(frames_done // frames_per_batch)
    try:  # the bar is closed before an interrupt propagates: its last redraw would
        # otherwise land after the CLI's one-line message
        for batch in collector or ():
            last = batch["next", "done"].squeeze(-1)  # (N, T) episode ends
            if not bool(torch.isfinite(batch["next", "reward"]).all()):
                raise UserError(f"{desc}: a reward of the batch after frame {frames_done} is "
                                f"not finite ({what}); nothing was updated with it, "
                                f"{str(folder / 'checkpoint.pt')!r} holds the last good state")
            log = update(batch, frames_done)
            frames_done += batch.numel()
            ends = last.any()
            log["episode_reward"] = float(batch["next", "reward"][last].mean()) if ends else math.nan
            log[track] = float(batch["next", track][last].mean()) if ends else math.nan
            log["fps"] = frames_done / max(time.perf_counter() - t0, 1e-9)
            if logger is not None:
                for k, v in log.items():
                    logger.log_scalar(f"train/{k}", v, step=frames_done)
            bar.update(batch.numel())
            bar.set_postfix({track: f"{log[track]:.4g}",
                             "reward": f"{log['episode_reward']:.3f}"})
            save(frames_done)
            reseed(frames_done // frames_per_batch)
    finally:
        bar.close()
    if collector is not None:
        collector.shutdown()
    return frames_done, time.perf_counter() - t0

def held_out(cfg: MegConfig, source: Any, policy: Any, **env_kw: Any) -> dict[str, Any]:
    """PPO (``policy``, the actor's module) and every baseline on ``ppo.eval_episodes`` held-out
    draws (test-split seeds, fading and noise shared by all policies); ``env_kw`` overrides the
    env's budget / SNR (:func:`~meg_lightning.power.env.make_env`)."""
    eval_env = make_env(cfg, source=source.with_split("test"), num_envs=cfg.ppo.eval_episodes,
                        seed=cfg.seed + 1_000_003, **env_kw)
    policies = {"ppo": PPOPolicy(eval_env, policy), **standard_policies(eval_env)}
    return evaluate_policies(eval_env, policies, transform=lambda e: wrap_env(e))


def summary_line(results: dict[str, Any], frames: int, seconds: float) -> str:
    """One line: the held-out latent MSE of every policy (lower is better), PPO against the
    causal DP, and the training cost."""
    pol = results["policies"]
    head = (f"train-ppo: held-out latent MSE (lower is better) at {results['snr_db']:g} dB "
            f"average SNR, {results['n']} episodes: "
            + ", ".join(f"{k} {v['latent_mse']:.4g}" for k, v in pol.items()))
    if "ppo" in pol and "causal_dp" in pol:
        head += f"; ppo / causal_dp = {pol['ppo']['latent_mse'] / pol['causal_dp']['latent_mse']:.3f}"
        if results.get("ratio_ci"):
            lo, hi = results["ratio_ci"]
            head += f" [{lo:.3f}, {hi:.3f}]"
    if results.get("gap_closed") is not None:
        head += f", gap to equal closed {results['gap_closed']:.0%}"
    return head + f"; {frames} frames in {seconds:.0f} s"


def finished_id(cfg: MegConfig) -> str:
    """Fingerprint of what a finished run's ``eval.json`` depends on (all but where it is and
    how it is logged): a rerun with the same one trains and evaluates nothing."""

    d = to_dict(cfg)
    return config_hash({k: v for k, v in d.items() if k not in ("out_dir", "logger", "wandb",
                                                                 "trainer", "eval")})


def _finished(folder: Path, run_id: str, fig10: bool) -> Optional[dict[str, Any]]:
    """The saved results of a finished run with this ``run_id`` (and its Fig. 10 CSV when asked
    for), else None."""

    path = folder / "eval.json"
    try:
        saved = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None  # unreadable: evaluate again and overwrite it (atomically)
    if not isinstance(saved, dict) or saved.get("run_id") != run_id:
        return None
    if fig10 and not (folder / "fig10.csv").is_file():
        return None
    return saved


def _json_safe(obj: Any) -> Any:
    """NaN (a metric a scheme does not have) -> null, so eval.json is strict JSON."""
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def load_policy(cfg: MegConfig, path: Optional[str | Path] = None,
                env: Optional[MEGPowerEnv] = None,
                trained_blocks: Optional[int] = None) -> ProbabilisticActor:
    """The trained actor from a ``checkpoint.pt`` (default ``{out_dir}/ppo/checkpoint.pt``);
    ``trained_blocks``: it was trained at that block count and acts at ``ppo.num_blocks``."""

    path = Path(path) if path else run_dir(cfg) / "checkpoint.pt"
    if not path.is_file():
        raise UserError(f"PPO checkpoint {str(path)!r} not found: train one with `meg train-ppo`")
    check = cfg
    if trained_blocks is not None:
        check = copy.deepcopy(cfg)
        check.ppo.num_blocks = trained_blocks
    ckpt = load_checkpoint(path, check)
    env = env or make_env(cfg, num_envs=2)
    actor, _, policy = build_models(cfg, wrap_env(env))
    actor.load_state_dict(ckpt["actor"])
    return policy.eval()


@POLICIES.register("ppo")
class PPOPolicy(PowerPolicy):
    """The PPO agent of ``meg train-ppo`` (its ``checkpoint.pt``), acting deterministically on
    the env wrapped as it was trained (:func:`wrap_env`)."""

    order = 3
    learned = True

    def __init__(self, env: MEGPowerEnv, actor: ProbabilisticActor):
        super().__init__(env)
        self.actor = actor

    @classmethod
    def build(cls, env: MEGPowerEnv, cfg: Any = None) -> "PPOPolicy":
        return cls(env, load_policy(cfg, env=env))

    def __call__(self, td):
        return self.actor(td)

    def eval(self) -> "PPOPolicy":
        self.actor.eval()
        return self
