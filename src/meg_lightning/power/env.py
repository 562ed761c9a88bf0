"""The seed power-control MDP of paper Sec. IV-B as a batched TorchRL environment.

One episode transmits one seed ``x`` (k real symbols) over B Rayleigh fading blocks; one step is
one block (Algorithm 3). N episodes run in parallel and end together (so a set-level reward such
as FID is computed over the N images of a batch).

::
    reset:  seeds x (N, k) from the source, gains h (N, B) ~ CN(0, 1), budget 1 (units of P_max)
    step t: observe s_t = {seed summary of block t, h_t, remaining budget, t/B}      (eq. 31)
            a_t in [0, 1] -> p_t = min(a_t, remaining) * P_max                       (eqs. 32-33)
            the last block spends whatever remains (the budget is always used exactly)
    t = B:  y_b = h_b sqrt(p_b) x_b + n (the channel layer) -> z_hat -> reward       (eq. 34)

Reward (``reward``): 0 before the last block, then ``-latent_mse`` (mean squared latent error),
``psnr`` (mean PSNR of the UE images against the perfect images, dB) or ``-fid`` (FID of the N UE
images against their N perfect images, the same value for the N episodes). Rewards are raw; the
training script rescales them.

Design choices:

- Power units: the budget is ``P_max`` (mW) per seed (30c); noise ``N0`` comes from ``snr_db``,
  the SNR of the equal share ``P_max / B`` (``10 log10(P_max / (B N0))``). Block powers reach the
  channel RELATIVE to that share (equal allocation = 1). Inside the env powers are fractions of
  ``P_max``, like the action.
- The seed in the state: a block of a paper-size seed has ~1000 symbols, so the state holds a
  fixed-size summary instead: the mean energy of ``seed_features`` consecutive chunks of block t
  (of the unit-power-normalised seed). The link's distortion depends on the symbols only through
  their energy, and a few numbers keep the policy input small.
- Stateless where it is cheap: everything the next step needs (gains, powers so far, block index,
  seed summaries) travels in the TensorDict, as in TorchRL's Pendulum. The seeds and latents
  themselves (up to ~16k floats per episode) stay in the env between reset and the last block:
  copying them into every step of a collected batch would cost ``frames x k`` floats.
- Episodes are synchronous (fixed length B), so a reset always starts all N episodes.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional, Protocol

import torch
from tensordict import TensorDict, TensorDictBase
from torch import nn
from torchrl.data import Bounded, Composite, Unbounded
from torchrl.envs import EnvBase

from meg_lightning.channels import CHANNELS, Channel, theory
from meg_lightning.channels import build as build_channel
from meg_lightning.codecs.train import load_trained_codec
from meg_lightning.data import build_datamodule
from meg_lightning.errors import ConfigError, UserError
from meg_lightning.generation import decode_latents, load_pipeline
from meg_lightning.metrics.fid import extract_features, frechet_distance, make_feature_extractor
from meg_lightning.metrics.image import psnr_per_image
from meg_lightning.mini.classifier import domain_features

REWARDS = ("latent_mse", "psnr", "fid")
SCHEMES = ("meg", "feature", "gaussian")


class SeedSource(Protocol):
    """Where episodes get their seeds: ``sample`` -> (x (n, k), z (n, ...)); ``decode`` x_hat -> z_hat;
    ``with_split("test")`` the held-out version of the source.

    ``images`` (optional) turns latents into images in [0, 1] for the psnr / fid rewards.
    """

    seed_dim: int
    images: Optional[Callable[[torch.Tensor], torch.Tensor]]

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]: ...

    def decode(self, x_hat: torch.Tensor) -> torch.Tensor: ...

    def with_split(self, split: str) -> "SeedSource": ...


class GaussianSeeds:
    """Synthetic unit-power Gaussian seeds, the fast proxy: the seed is its own latent (z = x)."""

    images = None

    def __init__(self, seed_dim: int):
        if seed_dim <= 0:
            raise ConfigError("ppo.seed_dim", seed_dim, "a positive integer")
        self.seed_dim = seed_dim

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn(n, self.seed_dim, generator=generator, device=generator.device)
        return x, x

    def decode(self, x_hat: torch.Tensor) -> torch.Tensor:
        return x_hat

    def with_split(self, split: str) -> "GaussianSeeds":
        return self  # held-out Gaussian seeds come from another generator seed


class LatentSeeds:
    """Seeds from cached latents z (M, C, h, w): ``x = codec.encode(z)`` (scheme ``meg``) or the
    flattened latent itself (scheme ``feature``). ``vae`` (optional) decodes latents to images.

    ``splits`` (name -> indices into z) lets :meth:`with_split` serve the held-out latents with
    the same codec and VAE; episodes draw from ``indices`` (all of z by default).
    """

    def __init__(self, z: torch.Tensor, codec: Optional[nn.Module] = None, vae: Any = None,
                 splits: Optional[dict[str, list[int]]] = None, split: Optional[str] = None):
        if z.ndim != 4 or len(z) == 0:
            raise ConfigError("latents", tuple(z.shape), "a non-empty (M, C, h, w) latent tensor")
        self.z_all, self.codec, self.vae, self.splits = z.float(), codec, vae, splits
        idx = splits[split] if splits is not None and split is not None else range(len(z))
        if len(idx) == 0:
            raise ConfigError("data.num_prompts", len(z), f"enough latents for a non-empty "
                              f"{split!r} split")
        self.z = self.z_all[torch.as_tensor(list(idx), dtype=torch.long)]
        with torch.no_grad():
            self.seed_dim = int(self._encode(self.z[:1]).shape[-1])
        self.images = self._images if vae is not None else None

    def _encode(self, z: torch.Tensor) -> torch.Tensor:
        return self.codec.encode(z).flatten(1) if self.codec is not None else z.flatten(1)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(len(self.z), (n,), generator=generator, device=generator.device)
        z = self.z[idx.to(self.z.device)]  # (n, C, h, w)
        return self._encode(z), z

    @torch.no_grad()
    def decode(self, x_hat: torch.Tensor) -> torch.Tensor:
        if self.codec is not None:
            return self.codec.decode(x_hat)
        return x_hat.reshape(-1, *self.z.shape[1:])  # (n, C, h, w)

    def with_split(self, split: str) -> "LatentSeeds":
        """The same source restricted to another split of the cache (e.g. ``test``)."""
        return LatentSeeds(self.z_all, self.codec, self.vae, self.splits, split)

    def _images(self, z: torch.Tensor) -> torch.Tensor:
        return decode_latents(self.vae, z)


class MEGPowerEnv(EnvBase):
    """Batched seed power control over B fading blocks (paper Sec. IV-B, Algorithm 3).

    Args:
        source: a :class:`SeedSource` (:class:`GaussianSeeds` or :class:`LatentSeeds`).
        num_envs: N parallel episodes (the env's batch size ``[N]``).
        num_blocks: B fading blocks per seed = episode length.
        p_max_mw: power budget per seed, mW (only labels results: the link sees ``snr_db``).
        snr_db: average SNR of the equal allocation, ``10 log10(P_max / (B N0))``.
        equalizer: ``mmse`` (default; a zero-power block decodes to the prior mean) | ``zf``.
        reward: ``latent_mse`` | ``psnr`` | ``fid`` (eq. 34).
        seed_features: S, the size of the per-block seed summary in the state.
        fid_extractor: image -> feature module for the fid reward (None: Inception if its weights
            are present, else pixel features; see :func:`meg_lightning.metrics.fid.make_feature_extractor`).
        image_metrics: decode images at the last block and fill ``psnr`` / ``fid`` (None: only
            when the reward needs them; True needs a source with a VAE).
        seed: seed of the env's own ``torch.Generator`` (seeds, fading and noise).

    Observation keys (all with leading batch dim N): ``g`` (N, 1) ``|h_t|^2``, ``h`` (N, 2) real and
    imaginary part of ``h_t``, ``budget`` (N, 1) remaining power / P_max, ``t`` (N, 1) t/B,
    ``share`` (N, 1) remaining power / (equal share x blocks left), ``log_g`` (N, 1) log10 g_t,
    ``seed`` (N, S) summary of block t, ``history`` (N, B) ``log(1 + received SNR)`` of the blocks
    already sent (0 for the others: what the transmitter knows about the distortion already
    incurred; the critic reads it), ``gains`` (N, B) log10 g_b of ALL blocks (privileged, future
    included: for the critic's input-driven baseline only, never a policy input); state: ``fading`` (N, B, 2), ``power`` (N, B) fractions of
    P_max spent per block, ``step`` (N, 1), ``seed_blocks`` (N, B, S); per-episode results (zero
    until the last block): ``latent_mse``, ``expected_mse`` (the noise-averaged MSE of unit-power
    Gaussian symbols given p and g, the proxy of the baselines), ``psnr``, ``fid``.
    """

    batch_locked = True  # the N episode slots are fixed; build another env for another N
    rng: Optional[torch.Generator] = None

    def __init__(self, source: SeedSource, *, num_envs: int = 256, num_blocks: int = 8,
                 p_max_mw: float = 8.0, snr_db: float = 20.0, equalizer: str = "mmse",
                 reward: str = "latent_mse", seed_features: int = 4,
                 fid_extractor: Optional[nn.Module] = None, image_metrics: Optional[bool] = None,
                 seed: Optional[int] = None, device: Any = "cpu",
                 channel: Optional[Channel] = None):
        if reward not in REWARDS:
            raise ConfigError("ppo.reward", reward, "one of latent_mse, psnr, fid")
        if not (isinstance(p_max_mw, (int, float)) and math.isfinite(p_max_mw) and p_max_mw > 0):
            raise ConfigError("ppo.p_max_mw", p_max_mw, "a number > 0 (mW)")
        if not (isinstance(snr_db, (int, float)) and math.isfinite(snr_db)):
            raise ConfigError("ppo.avg_snr_db", snr_db, "a finite number (dB)")
        for key, v in (("ppo.num_envs", num_envs), ("ppo.num_blocks", num_blocks),
                       ("ppo.seed_features", seed_features)):
            if not isinstance(v, int) or v <= 0:
                raise ConfigError(key, v, "a positive integer")
        if equalizer not in ("mmse", "zf"):
            raise ConfigError("ppo.equalizer", equalizer, "mmse or zf")
        k = source.seed_dim
        n_c = (k + 1) // 2  # complex channel uses (the channel pads an odd k with one zero)
        if n_c % num_blocks:
            raise ConfigError("ppo.num_blocks", num_blocks,
                              f"a divisor of the {n_c} complex symbols of the {k}-symbol seed")
        self.image_metrics = reward != "latent_mse" if image_metrics is None else image_metrics
        if self.image_metrics and source.images is None:
            raise ConfigError("ppo.reward", reward,
                              "latent_mse for seeds without a VAE (psnr and fid need images: "
                              "ppo.scheme=meg or feature with a model)")
        super().__init__(device=device, batch_size=torch.Size([num_envs]))
        self.source, self.num_blocks, self.reward_kind = source, num_blocks, reward
        self.p_max_mw, self.snr_db, self.equalizer = float(p_max_mw), float(snr_db), equalizer
        self.seed_features = seed_features
        self.block_len = 2 * n_c // num_blocks  # real symbols per block (incl. padding)
        # Gaussian seeds are unit-power by construction; real seeds are normalised per sample.
        # the project's channel layer, given the fading the agent observed (eq. 28-29): Rayleigh
        # block fading unless another fading model is given (its settings are kept)
        link_args = dict(snr_db=snr_db, num_blocks=num_blocks, equalizer=equalizer,
                         normalize=not isinstance(source, GaussianSeeds))
        self.link = (channel.replace(**link_args) if channel is not None
                     else CHANNELS["rayleigh"](**link_args))
        self.n_c = n_c
        self.groups = self.link.groups(n_c)  # independent gains per seed
        if self.groups % num_blocks:
            raise ConfigError("ppo.num_blocks", num_blocks,
                              f"a divisor of the {self.groups} gain groups of the "
                              f"{self.link.kind} channel")
        self._fid_extractor = fid_extractor
        self._x: Optional[torch.Tensor] = None  # (N, k) seeds of the running episodes
        self._z: Optional[torch.Tensor] = None  # (N, ...) their latents
        self._make_spec()
        if seed is None:
            seed = int(torch.empty((), dtype=torch.int64).random_().item())
        self.set_seed(seed)

    # -- specs ---------------------------------------------------------------------------------
    def _make_spec(self) -> None:
        N, B, S = self.batch_size[0], self.num_blocks, self.seed_features
        f32 = torch.float32
        unit = lambda *s: Bounded(low=0.0, high=1.0, shape=(N, *s), dtype=f32, device=self.device)  # noqa: E731
        free = lambda *s: Unbounded(shape=(N, *s), dtype=f32, device=self.device)  # noqa: E731
        self.observation_spec = Composite(
            g=free(1), h=free(2), budget=unit(1), t=unit(1), seed=free(S), share=free(1),
            log_g=free(1),
            history=free(B), gains=free(B), fading=free(self.groups, 2), power=unit(B),
            seed_blocks=free(B, S),
            step=Bounded(low=0, high=B, shape=(N, 1), dtype=torch.int64, device=self.device),
            latent_mse=free(1), expected_mse=free(1), psnr=free(1), fid=free(1),
            shape=(N,), device=self.device)
        # the next step needs the carried state back: the same keys as the observation
        self.state_spec = self.observation_spec.clone()
        self.action_spec = unit(1)
        self.reward_spec = free(1)

    def _set_seed(self, seed: Optional[int]) -> None:
        self.seed = int(seed) if seed is not None else 0  # kept so evaluations can replay draws
        self.rng = torch.Generator(device=self.device)
        self.rng.manual_seed(self.seed)

    # -- dynamics ------------------------------------------------------------------------------
    def _summaries(self, x: torch.Tensor) -> torch.Tensor:
        """(N, k) seeds -> (N, B, S) mean energy of S chunks of each block (unit-power domain)."""
        N, k = x.shape
        xn = x / x.square().mean(1, keepdim=True).sqrt().clamp_min(1e-12)
        pad = self.block_len * self.num_blocks - k
        e = torch.nn.functional.pad(xn.square(), (0, pad)).reshape(N * self.num_blocks, 1, -1)
        return torch.nn.functional.adaptive_avg_pool1d(e, self.seed_features).reshape(
            N, self.num_blocks, self.seed_features)

    def block_gains(self, fading: torch.Tensor) -> torch.Tensor:
        """(N, groups, 2) gains -> (N, B) the mean power gain |h|^2 of each power block."""
        N, B = fading.shape[0], self.num_blocks
        return fading.square().sum(-1).reshape(N, B, self.groups // B).mean(-1)

    def _observe(self, fading: torch.Tensor, seed_blocks: torch.Tensor, step: torch.Tensor,
                 power: torch.Tensor, budget: torch.Tensor) -> dict[str, torch.Tensor]:
        """The per-block part of the observation at block ``step`` (clamped at the last block)."""

        B = self.num_blocks
        t = step.clamp(max=B - 1)  # (N, 1)
        first = t * (self.groups // B)  # the first gain group of block t
        h = fading.gather(1, first[:, :, None].expand(-1, 1, 2)).squeeze(1)  # (N, 2)
        g_all = self.block_gains(fading)  # (N, B)
        seed = seed_blocks.gather(1, t[:, :, None].expand(-1, 1, self.seed_features)).squeeze(1)
        past = torch.arange(B, device=step.device)[None, :] < step  # (N, B) blocks already sent
        # received SNR of each block sent, p_b g_b / sigma2, as log(1 + SNR) (0 for the future):
        # smooth in the powers, and exp(-x) is the MMSE distortion of a unit-power Gaussian symbol
        snr_b = power * B * g_all / theory.noise_var_from_snr_db(self.snr_db)
        history = torch.log1p(snr_b) * past
        # remaining power relative to an equal split over the blocks left (1 = on the tie path):
        # a function of (budget, t) that the optimal causal policy scales with
        share = budget * B / (B - step).clamp_min(1).float()
        g = g_all.gather(1, t)  # (N, 1)
        # log10 g as well: the optimal allocation changes fastest for weak channels (g << 1)
        gains = g_all.clamp_min(1e-6).log10()  # (N, B) all blocks, privileged
        return {"h": h, "g": g, "log_g": g.clamp_min(1e-6).log10(), "seed": seed,
                "t": step.float() / B, "share": share, "history": history, "gains": gains}

    def _reset(self, tensordict: Optional[TensorDictBase] = None, **kwargs: Any) -> TensorDictBase:
        N, B = self.batch_size[0], self.num_blocks
        x, z = self.source.sample(N, self.rng)
        self._x, self._z = x.to(self.device), z.to(self.device)
        like = torch.empty(0, device=self.device)
        fading = torch.view_as_real(self.link.draw_gains(N, self.n_c, self.rng, like))  # (N, G, 2)
        seed_blocks = self._summaries(self._x).float()
        step = torch.zeros(N, 1, dtype=torch.int64, device=self.device)
        zeros = torch.zeros(N, 1, device=self.device)
        power = torch.zeros(N, B, device=self.device)
        budget = torch.ones(N, 1, device=self.device)
        out = {"fading": fading, "seed_blocks": seed_blocks, "step": step, "power": power,
               "budget": budget, "latent_mse": zeros, "expected_mse": zeros, "psnr": zeros,
               "fid": zeros, **self._observe(fading, seed_blocks, step, power, budget)}
        return TensorDict(out, batch_size=self.batch_size, device=self.device)

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        B = self.num_blocks
        step, budget = tensordict["step"], tensordict["budget"]  # (N, 1), (N, 1)
        a = tensordict["action"].clamp(0.0, 1.0)  # (N, 1) fraction of P_max (eq. 32)
        last = step >= B - 1
        # eq. 33: never more than what remains; the last block spends all that remains
        spend = torch.where(last, budget, torch.minimum(a, budget))
        power = tensordict["power"].scatter(1, step.clamp(max=B - 1), spend)  # (N, B)
        budget = torch.where(last, torch.zeros_like(budget), (budget - spend).clamp_min(0.0))
        step = step + 1
        done = step >= B
        fading, seed_blocks = tensordict["fading"], tensordict["seed_blocks"]
        zeros = torch.zeros_like(budget)
        out = {"fading": fading, "seed_blocks": seed_blocks, "step": step, "power": power,
               "budget": budget, "reward": zeros, "latent_mse": zeros, "expected_mse": zeros,
               "psnr": zeros, "fid": zeros, "done": done, "terminated": done.clone(),
               **self._observe(fading, seed_blocks, step, power, budget)}
        if bool(done.any()):
            out.update(self._finish(fading, power, done))
        return TensorDict(out, batch_size=self.batch_size, device=self.device)

    @torch.no_grad()
    def _finish(self, fading: torch.Tensor, power: torch.Tensor, done: torch.Tensor
                ) -> dict[str, torch.Tensor]:
        """Transmit the seeds with the chosen powers; the terminal reward of finished episodes."""
        if self._x is None:
            raise RuntimeError("MEGPowerEnv.step before reset")
        h = torch.complex(fading[..., 0], fading[..., 1])  # (N, groups)
        p_rel = power * self.num_blocks  # relative to the equal share P_max / B
        x_hat = self.link(self._x, mode="eval", power=p_rel, h=h,
                          generator=self.rng)["x_hat"]  # (N, k)
        z_hat = self.source.decode(x_hat)
        latent_mse = (z_hat - self._z).flatten(1).square().mean(1, keepdim=True)  # (N, 1)
        mse_fn = theory.mse_mmse if self.equalizer == "mmse" else theory.mse_zf
        g = fading.square().sum(-1)  # (N, groups)
        p_g = p_rel.repeat_interleave(self.groups // self.num_blocks, dim=1)
        expected = mse_fn(theory.noise_var_from_snr_db(self.snr_db), p_g, g).mean(-1, keepdim=True)
        res = {"latent_mse": latent_mse, "expected_mse": expected}
        psnr = fid = torch.zeros_like(latent_mse)
        if self.image_metrics:
            psnr, fid = self._image_metrics(z_hat)
            res.update(psnr=psnr, fid=fid)
        reward = {"latent_mse": -latent_mse, "psnr": psnr, "fid": -fid}[self.reward_kind]
        mask = done.float()
        res = {k: v.float() * mask for k, v in res.items()}
        res["reward"] = reward.float() * mask
        return res

    def _image_metrics(self, z_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 1) PSNR per UE image and (N, 1) FID of the N UE images against the perfect ones."""
        i_0 = self.source.images(self._z)  # perfect images (no channel), [0, 1]
        i_g = self.source.images(z_hat)
        psnr = psnr_per_image(i_g, i_0)[0].float()[:, None]
        if self._fid_extractor is None:
            self._fid_extractor = make_feature_extractor("auto")
        fid = frechet_distance(extract_features(self._fid_extractor, i_0),
                               extract_features(self._fid_extractor, i_g))
        return psnr, torch.full_like(psnr, fid)


def snr_from_budget(p_max_mw: float, num_blocks: int, noise_power_mw: float,
                    avg_snr_db: Optional[float]) -> float:
    """The equal-share SNR (dB): ``avg_snr_db`` if set (N0 is then implied), else from N0."""
    if avg_snr_db is not None:
        return float(avg_snr_db)
    return float(theory.avg_snr_db(p_max_mw, num_blocks, noise_power_mw))


def make_source(cfg: Any, split: str = "train", images: Optional[bool] = None) -> SeedSource:
    """The seed source of ``cfg.ppo.scheme`` (a :class:`~meg_lightning.config.MegConfig`).

    Latent schemes read the latent cache (written by ``meg latents``; a missing cache is a
    UserError saying so) and serve ``split``; ``source.with_split("test")`` gives the held-out
    latents. ``images`` loads the VAE so that episodes end in UE images (default: only when the
    reward needs them; the Fig. 10 evaluation asks for them to report FID and PSNR).
    """

    scheme = cfg.ppo.scheme
    if scheme == "gaussian":
        return GaussianSeeds(cfg.ppo.seed_dim)
    if scheme not in SCHEMES:
        raise ConfigError("ppo.scheme", scheme, "one of meg, feature, gaussian")

    dm = build_datamodule(cfg)
    dm.prepare_data()
    dm.setup("fit")
    ds = dm.dataset("train")
    # (M, C, h, w): the whole cache (a tensor, or the memory-mapped cache); splits index into it
    z = ds.z.stack() if hasattr(ds.z, "stack") else torch.as_tensor(ds.z)
    z = z.float()
    codec = None
    if scheme == "meg":
        codec = load_trained_codec(cfg, latent_shape=tuple(z.shape[1:]))
    vae = None
    if images if images is not None else cfg.ppo.reward != "latent_mse":
        vae = load_pipeline(cfg, device=torch.device("cpu")).vae
    return LatentSeeds(z, codec=codec, vae=vae, splits=dm.splits, split=split)


def make_env(cfg: Any, *, num_envs: Optional[int] = None, seed: Optional[int] = None,
             source: Optional[SeedSource] = None, p_max_mw: Optional[float] = None,
             fid_extractor: Optional[nn.Module] = None, image_metrics: Optional[bool] = None
             ) -> MEGPowerEnv:
    """A :class:`MEGPowerEnv` from ``cfg.ppo`` (and ``cfg.channel.noise_power_mw``).

    ``source`` lets several envs (training, evaluation, a power sweep) share one seed source.
    """

    p = cfg.ppo
    p_max = p.p_max_mw if p_max_mw is None else p_max_mw
    if not (isinstance(p_max, (int, float)) and math.isfinite(p_max) and p_max > 0):
        raise ConfigError("ppo.p_max_mw", p_max, "a number > 0 (mW)")
    if p.reward not in REWARDS:
        raise ConfigError("ppo.reward", p.reward, "one of latent_mse, psnr, fid")
    try:
        source = source or make_source(cfg)
    except (ImportError, AttributeError) as e:
        raise UserError(f"ppo.scheme={p.scheme!r} needs the latent cache and codec modules "
                        f"({type(e).__name__}: {e}); use ppo.scheme=gaussian") from None
    if fid_extractor is None and (p.reward == "fid" or image_metrics):
        fid_extractor = make_feature_extractor(cfg.eval.fid_features,
                                       domain_features(cfg.model, cfg.eval.fid_features))
    snr_db = snr_from_budget(p_max, p.num_blocks, cfg.channel.noise_power_mw, p.avg_snr_db)
    return MEGPowerEnv(source, num_envs=num_envs or p.num_envs, num_blocks=p.num_blocks,
                       p_max_mw=p_max, snr_db=snr_db, equalizer=p.equalizer, reward=p.reward,
                       seed_features=p.seed_features, fid_extractor=fid_extractor,
                       image_metrics=image_metrics, seed=cfg.seed if seed is None else seed,
                       channel=build_channel(cfg, kind=p.channel))
