"""The seed power-control MDP of paper Sec. IV-B as a batched TorchRL environment.

One episode transmits one seed ``x`` (k real symbols) over B fading blocks; one step is one block
(Algorithm 3). N episodes run in parallel and end together (so a set-level reward such as FID is
computed over the N images of a batch).

::
    reset:  an average SNR per episode (``snr_db``: one value, or drawn from a range), seeds x (N, k)
            from the source (an SNR-adaptive codec encodes at that SNR), gains h ~ the channel
            model, budget 1 (units of P_max)
    step t: observe s_t = {seed summary of block t, h_t, remaining budget, t/B, SNR}   (eq. 31)
            a_t in [0, 1] -> p_t = min(a_t, remaining) * P_max                       (eqs. 32-33)
            (every block keeps ``min_power`` of its equal share; the last block spends the rest)
    t = B:  y_b = h_b sqrt(p_b) x_b + n (the channel layer) -> z_hat -> reward       (eq. 34)

The receiver decodes with what the allocation produced: an SNR-adaptive decoder (``meg-adaptive``)
gets each block's effective SNR after equalisation (the channel's ``csi_db``).

Reward (``reward``): 0 before the last block, then ``-latent_mse`` (mean squared latent error;
with an SNR range, divided by equal power's ergodic MMSE distortion at the episode's SNR),
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
  seed summaries, the episode's SNR) travels in the TensorDict, as in TorchRL's Pendulum. The seeds
  and latents themselves (up to ~16k floats per episode) stay in the env between reset and the
  last block: copying them into every step of a collected batch would cost ``frames x k`` floats.
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
from meg_lightning.codecs.store import load_learned_codec
from meg_lightning.data import build_datamodule
from meg_lightning.errors import ConfigError, UserError
from meg_lightning.generation import decode_latents, load_pipeline
from meg_lightning.metrics.fid import extract_features, frechet_distance, make_feature_extractor
from meg_lightning.metrics.image import psnr_per_image
from meg_lightning.mini.classifier import domain_features
from meg_lightning.power.baselines import LinkModel

REWARDS = ("latent_mse", "psnr", "fid")
#: the seed sources of ``ppo.scheme``: Gaussian symbols, or latents sent as they are (feature) or
#: through a trained codec (the learned folder of :mod:`meg_lightning.codecs.store`)
SCHEMES = {"gaussian": None, "feature": None, "meg": "codec", "meg-adaptive": "codec-adaptive"}
#: the effective SNR (dB) at which a decoder is linearised for :meth:`LatentSeeds.link_model`
_LINEARIZE_CSI_DB = 50.0
#: the most finite-difference probes of :meth:`LatentSeeds.link_model` (one per symbol below)
MAX_PROBES = 1024


def _snr_of(snr_db: Any, n: int, like: torch.Tensor) -> torch.Tensor:
    """``snr_db`` (number or (n,) / (n, 1) tensor) as a (n,) float tensor on ``like``'s device."""
    t = torch.as_tensor(snr_db, dtype=torch.float32, device=like.device)
    return t.reshape(-1).expand(n) if t.numel() == 1 else t.reshape(n)


class SeedSource(Protocol):
    """Where episodes get their seeds: ``sample`` -> (x (n, k), z (n, ...)), encoded at each
    episode's SNR; ``decode`` x_hat (and each block's effective SNR) -> z_hat;
    ``with_split("test")`` the held-out version of the source; ``link_model`` the linear-MMSE
    model of its link (:class:`~meg_lightning.power.baselines.LinkModel`) that the reference
    policies optimise.

    ``images`` (optional) turns latents into images in [0, 1] for the psnr / fid rewards;
    ``index`` the cache indices of the last sample (None for synthetic seeds).
    """

    seed_dim: int
    images: Optional[Callable[[torch.Tensor], torch.Tensor]]
    index: Optional[torch.Tensor]

    def sample(self, n: int, generator: torch.Generator, snr_db: Any = None
               ) -> tuple[torch.Tensor, torch.Tensor]: ...

    def decode(self, x_hat: torch.Tensor, snr_db: Any = None,
               csi_db: Optional[torch.Tensor] = None) -> torch.Tensor: ...

    def with_split(self, split: str, ordered: bool = False) -> "SeedSource": ...

    def link_model(self, num_blocks: int, snr_db: float) -> LinkModel: ...


class GaussianSeeds:
    """Synthetic unit-power Gaussian seeds, the fast proxy: the seed is its own latent (z = x)."""

    images = None
    index = None
    equalizer = "mmse"  # the receiver of ``ppo.equalizer: null``

    def __init__(self, seed_dim: int):
        if seed_dim <= 0:
            raise ConfigError("ppo.seed_dim", seed_dim, "a positive integer")
        self.seed_dim = seed_dim

    def sample(self, n: int, generator: torch.Generator, snr_db: Any = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn(n, self.seed_dim, generator=generator, device=generator.device)
        return x, x

    def decode(self, x_hat: torch.Tensor, snr_db: Any = None,
               csi_db: Optional[torch.Tensor] = None) -> torch.Tensor:
        return x_hat

    def with_split(self, split: str, ordered: bool = False) -> "GaussianSeeds":
        return self  # held-out Gaussian seeds come from another generator seed

    def link_model(self, num_blocks: int, snr_db: float) -> LinkModel:
        return LinkModel.uniform(num_blocks)


class LatentSeeds:
    """Seeds from cached latents z (M, C, h, w): ``x = codec.encode(z)`` (a codec: schemes ``meg``
    and, SNR-adaptive, ``meg-adaptive``) or the flattened latent itself (scheme ``feature``).
    ``vae`` (optional) decodes latents to images.

    ``splits`` (name -> indices into z) lets :meth:`with_split` serve the held-out latents with
    the same codec and VAE; episodes draw from ``indices`` (all of z by default), at random or,
    ``ordered``, each latent in turn (an evaluation over the whole split).
    """

    def __init__(self, z: torch.Tensor, codec: Optional[nn.Module] = None, vae: Any = None,
                 splits: Optional[dict[str, list[int]]] = None, split: Optional[str] = None,
                 ordered: bool = False):
        if z.ndim != 4 or len(z) == 0:
            raise ConfigError("latents", tuple(z.shape), "a non-empty (M, C, h, w) latent tensor")
        self.z_all, self.codec, self.vae, self.splits = z.float(), codec, vae, splits
        self.split, self.ordered = split, ordered
        idx = splits[split] if splits is not None and split is not None else range(len(z))
        if len(idx) == 0:
            raise ConfigError("data.num_prompts", len(z), f"enough latents for a non-empty "
                              f"{split!r} split")
        self.indices = torch.as_tensor(list(idx), dtype=torch.long)
        self.z = self.z_all[self.indices]
        self.adaptive = bool(getattr(codec, "adaptive", False))
        # the receiver of ``ppo.equalizer: null``: the one a codec was trained with, else mmse
        trained = getattr(codec, "hparams", {}).get("channel", {}) if codec is not None else {}
        self.equalizer = trained.get("equalizer", "mmse") if isinstance(trained, dict) else "mmse"
        self.index: Optional[torch.Tensor] = None
        self._seeds: dict[float, torch.Tensor] = {}
        with torch.no_grad():
            self.seed_dim = int(self._encode(self.z[:1], torch.zeros(1)).shape[-1])
        self.images = self._images if vae is not None else None
        self._models: dict[tuple[int, float], LinkModel] = {}

    def _encode(self, z: torch.Tensor, snr_db: Any) -> torch.Tensor:
        if self.codec is None:
            return z.flatten(1)
        if self.adaptive:
            return self.codec.encode(z, _snr_of(snr_db, len(z), z)).flatten(1)
        return self.codec.encode(z).flatten(1)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator, snr_db: Any = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.ordered:
            pick = torch.arange(n) % len(self.z)
        else:
            pick = torch.randint(len(self.z), (n,), generator=generator,
                                 device=generator.device).cpu()
        self.index = self.indices[pick]
        z = self.z[pick.to(self.z.device)]  # (n, C, h, w)
        snr = torch.as_tensor(0.0 if snr_db is None else snr_db, dtype=torch.float32)
        if snr.numel() > 1 and bool((snr != snr.reshape(-1)[0]).any()):
            return self._encode(z, snr), z
        # one SNR for the batch: every seed of this source at that SNR, encoded once
        key = round(float(snr.reshape(-1)[0]), 6)
        if key not in self._seeds:
            self._seeds = {key: self._encode(self.z, key)}  # (M, k); the last SNR only
        return self._seeds[key][pick.to(self.z.device)], z

    @torch.no_grad()
    def decode(self, x_hat: torch.Tensor, snr_db: Any = None,
               csi_db: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.codec is None:
            return x_hat.reshape(-1, *self.z.shape[1:])  # (n, C, h, w)
        if self.adaptive:
            return self.codec.decode(x_hat, _snr_of(0.0 if snr_db is None else snr_db,
                                                    len(x_hat), x_hat), csi_db)
        return self.codec.decode(x_hat)

    def with_split(self, split: str, ordered: bool = False) -> "LatentSeeds":
        """The same source restricted to another split of the cache (e.g. ``test``)."""
        out = LatentSeeds(self.z_all, self.codec, self.vae, self.splits, split, ordered)
        out._models = self._models  # the same codec: the same link model
        return out

    def _images(self, z: torch.Tensor) -> torch.Tensor:
        return decode_latents(self.vae, z)

    @torch.no_grad()
    def link_model(self, num_blocks: int, snr_db: float, samples: int = 16) -> LinkModel:
        """The linear-MMSE model of this source's link, measured on (at most ``samples``) latents
        of the source: the energy ``e_i`` of each real symbol of the unit-power seed, and the
        latent error it carries, ``w_i ~ e_i |dz/dx_i|^2`` (the decoder's sensitivity to noise on
        it, by finite differences at a clean link). Cached per (B, SNR)."""
        key = (num_blocks, round(float(snr_db), 6))
        if key in self._models:
            return self._models[key]
        z = self.z[: min(samples, len(self.z))]
        n = len(z)
        snr = torch.full((n,), float(snr_db))
        x = self._encode(z, snr)  # (n, k)
        k = x.shape[1]
        scale = x.square().mean(1, keepdim=True).sqrt().clamp_min(1e-12)  # the channel's
        energy = (x / scale).square().mean(0)  # (k,) unit mean
        clean = torch.full((n, num_blocks), _LINEARIZE_CSI_DB)
        base = self.decode(x, snr, clean).reshape(n, -1)
        # groups of consecutive symbols perturbed together with random signs (one symbol each
        # up to MAX_PROBES symbols): E|J v|^2 is the sum of the group's |J_i|^2
        probes = min(k, MAX_PROBES)
        group = torch.arange(k) * probes // k  # (k,) group of each symbol
        signs = torch.randint(0, 2, (k,), generator=torch.Generator().manual_seed(0)) * 2.0 - 1
        step = 1e-2
        sens = torch.zeros(probes, dtype=torch.float64)
        chunk = max(1, 4096 // n)
        for a in range(0, probes, chunk):
            ids = torch.arange(a, min(a + chunk, probes))
            v = (group[None, :] == ids[:, None]).float() * signs  # (c, k)
            xp = (x[None] + step * scale[None] * v[:, None, :]).reshape(-1, k)
            c = len(ids)
            zp = self.decode(xp, snr.repeat(c), clean.repeat(c, 1)).reshape(c, n, -1)
            sens[ids] = ((zp - base[None]) / step).square().mean(-1).mean(-1).double()
        size = torch.bincount(group, minlength=probes).double()
        weight = energy.double() * (sens / size)[group]  # latent MSE per unit MMSE error
        return self._models.setdefault(key, LinkModel.from_symbols(
            weight, energy, num_blocks, scale=float(weight.sum())))


class MEGPowerEnv(EnvBase):
    """Batched seed power control over B fading blocks (paper Sec. IV-B, Algorithm 3).

    Args:
        source: a :class:`SeedSource` (:class:`GaussianSeeds` or :class:`LatentSeeds`).
        num_envs: N parallel episodes (the env's batch size ``[N]``).
        num_blocks: B fading blocks per seed = episode length.
        p_max_mw: power budget per seed, mW (only labels results: the link sees ``snr_db``).
        snr_db: average SNR of the equal allocation, ``10 log10(P_max / (B N0))``: one value, or
            ``(lo, hi)``: each episode draws its own uniformly in dB (one policy for every budget;
            it is observed as ``snr``).
        equalizer: ``mmse`` (default; a zero-power block decodes to the prior mean) | ``zf``.
        reward: ``latent_mse`` | ``psnr`` | ``fid`` (eq. 34).
        seed_features: S, the size of the per-block seed summary in the state.
        min_power: every block's floor, relative to the equal share (0 <= min_power < 1).
        fid_extractor: image -> feature module for the fid reward (None: Inception if its weights
            are present, else pixel features; see :func:`meg_lightning.metrics.fid.make_feature_extractor`).
        image_metrics: decode images at the last block and fill ``psnr`` / ``fid`` (None: only
            when the reward needs them; True needs a source with a VAE).
        seed: seed of the env's own ``torch.Generator`` (seeds, fading and noise).
        channel: the fading model (default Rayleigh block fading); its own settings are kept.

    Observation keys (all with leading batch dim N): ``g`` (N, 1) ``|h_t|^2``, ``h`` (N, 2) real and
    imaginary part of ``h_t``, ``budget`` (N, 1) remaining power / P_max, ``t`` (N, 1) t/B,
    ``share`` (N, 1) remaining power / (equal share x blocks left), ``log_g`` (N, 1) log10 g_t,
    ``snr`` (N, 1) the episode's average SNR / 10 dB, ``seed`` (N, S) summary of block t,
    ``history`` (N, B) ``log(1 + received SNR)`` of the blocks already sent (0 for the others:
    what the transmitter knows about the distortion already incurred; the critic reads it),
    ``gains`` (N, B) log10 g_b of ALL blocks (privileged, future included: for the critic's
    input-driven baseline only, never a policy input); state: ``fading`` (N, groups, 2),
    ``power`` (N, B) fractions of P_max spent per block, ``step`` (N, 1), ``seed_blocks``
    (N, B, S), ``snr_db`` (N, 1); per-episode results (zero until the last block):
    ``latent_mse``, ``expected_mse`` (the noise-averaged distortion of the source's
    :meth:`~SeedSource.link_model` given p and g, in latent MSE units: the figure of merit of the
    reference policies), ``psnr``, ``fid``.
    """

    batch_locked = True  # the N episode slots are fixed; build another env for another N
    rng: Optional[torch.Generator] = None

    def __init__(self, source: SeedSource, *, num_envs: int = 256, num_blocks: int = 8,
                 p_max_mw: float = 8.0, snr_db: Any = 20.0, equalizer: str = "mmse",
                 reward: str = "latent_mse", seed_features: int = 4, min_power: float = 0.0,
                 fid_extractor: Optional[nn.Module] = None, image_metrics: Optional[bool] = None,
                 seed: Optional[int] = None, device: Any = "cpu",
                 channel: Optional[Channel] = None):
        if reward not in REWARDS:
            raise ConfigError("ppo.reward", reward, "one of latent_mse, psnr, fid")
        if not (isinstance(p_max_mw, (int, float)) and math.isfinite(p_max_mw) and p_max_mw > 0):
            raise ConfigError("ppo.p_max_mw", p_max_mw, "a number > 0 (mW)")
        snr_range = list(snr_db) if isinstance(snr_db, (list, tuple)) else [snr_db, snr_db]
        if not (len(snr_range) == 2 and all(isinstance(v, (int, float)) and math.isfinite(v)
                                            for v in snr_range) and snr_range[0] <= snr_range[1]):
            raise ConfigError("ppo.avg_snr_db", snr_db, "a finite number (dB) or [lo, hi]")
        for key, v in (("ppo.num_envs", num_envs), ("ppo.num_blocks", num_blocks),
                       ("ppo.seed_features", seed_features)):
            if not isinstance(v, int) or v <= 0:
                raise ConfigError(key, v, "a positive integer")
        if equalizer not in ("mmse", "zf"):
            raise ConfigError("ppo.equalizer", equalizer, "mmse or zf")
        if not (isinstance(min_power, (int, float)) and 0 <= min_power < 1):
            raise ConfigError("ppo.min_power", min_power, "a number in [0, 1) (of the equal share)")
        k = source.seed_dim
        n_c = (k + 1) // 2  # complex channel uses (the channel pads an odd k with one zero)
        if n_c % num_blocks:
            raise ConfigError("ppo.num_blocks", num_blocks,
                              f"a divisor of the {n_c} complex symbols of the {k}-symbol seed")
        self.image_metrics = reward != "latent_mse" if image_metrics is None else image_metrics
        if self.image_metrics and source.images is None:
            raise ConfigError("ppo.reward", reward,
                              "latent_mse for seeds without a VAE (psnr and fid need images: "
                              "a latent ppo.scheme with a model)")
        super().__init__(device=device, batch_size=torch.Size([num_envs]))
        self.source, self.num_blocks, self.reward_kind = source, num_blocks, reward
        self._perfect: Optional[tuple[torch.Tensor, torch.Tensor]] = None  # (index, I_0)
        self.p_max_mw, self.equalizer = float(p_max_mw), equalizer
        self.snr_range = (float(snr_range[0]), float(snr_range[1]))
        self.min_power = float(min_power)
        self.seed_features = seed_features
        self.block_len = 2 * n_c // num_blocks  # real symbols per block (incl. padding)
        # Gaussian seeds are unit-power by construction; real seeds are normalised per sample.
        # the project's channel layer, given the fading the agent observed (eq. 28-29): Rayleigh
        # block fading unless another fading model is given (its settings are kept)
        link_args = dict(snr_db=self.snr_range[0], num_blocks=num_blocks, equalizer=equalizer,
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
        self.outcome: dict[str, torch.Tensor] = {}  # the last finished batch (z, z_hat, index)
        self._model: Optional[LinkModel] = None
        self._make_spec()
        if seed is None:
            seed = int(torch.empty((), dtype=torch.int64).random_().item())
        self.set_seed(seed)

    @property
    def snr_db(self) -> float:
        """The average SNR (dB) of a fixed-SNR env; a ConfigError for an SNR range."""
        lo, hi = self.snr_range
        if lo != hi:
            raise ConfigError("ppo.avg_snr_db", list(self.snr_range),
                              "one SNR for this use (a range trains one policy for many budgets)")
        return lo

    @property
    def fixed_snr(self) -> bool:
        return self.snr_range[0] == self.snr_range[1]

    @property
    def link_model(self) -> LinkModel:
        """The source's link model at this env's (fixed) SNR, scaled to latent MSE."""
        if self._model is None:
            self._model = self.source.link_model(self.num_blocks, self.snr_db)
        return self._model

    # -- specs ---------------------------------------------------------------------------------
    def _make_spec(self) -> None:
        N, B, S = self.batch_size[0], self.num_blocks, self.seed_features
        f32 = torch.float32
        unit = lambda *s: Bounded(low=0.0, high=1.0, shape=(N, *s), dtype=f32, device=self.device)  # noqa: E731
        free = lambda *s: Unbounded(shape=(N, *s), dtype=f32, device=self.device)  # noqa: E731
        self.observation_spec = Composite(
            g=free(1), h=free(2), budget=unit(1), t=unit(1), seed=free(S), share=free(1),
            log_g=free(1), snr=free(1), snr_db=free(1),
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

    def spend_limits(self, budget: torch.Tensor, step: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """(lowest, highest) fraction of P_max block ``step`` may spend with ``budget`` left, both
        (N, 1): the floor of this block, and what leaves the floors of the blocks after it."""
        B = self.num_blocks
        floor = self.min_power / B
        after = (B - 1 - step).clamp_min(0).float()
        high = (budget - floor * after).clamp_min(0.0)
        return torch.minimum(torch.full_like(budget, floor), high), high

    def _observe(self, fading: torch.Tensor, seed_blocks: torch.Tensor, step: torch.Tensor,
                 power: torch.Tensor, budget: torch.Tensor, snr_db: torch.Tensor
                 ) -> dict[str, torch.Tensor]:
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
        snr_b = power * B * g_all / theory.noise_var_from_snr_db(snr_db)
        history = torch.log1p(snr_b) * past
        # remaining power relative to an equal split over the blocks left (1 = on the tie path):
        # a function of (budget, t) that the optimal causal policy scales with
        share = budget * B / (B - step).clamp_min(1).float()
        g = g_all.gather(1, t)  # (N, 1)
        # log10 g as well: the optimal allocation changes fastest for weak channels (g << 1)
        gains = g_all.clamp_min(1e-6).log10()  # (N, B) all blocks, privileged
        return {"h": h, "g": g, "log_g": g.clamp_min(1e-6).log10(), "seed": seed,
                "t": step.float() / B, "share": share, "history": history, "gains": gains,
                "snr": snr_db / 10.0}

    def _reset(self, tensordict: Optional[TensorDictBase] = None, **kwargs: Any) -> TensorDictBase:
        N, B = self.batch_size[0], self.num_blocks
        lo, hi = self.snr_range
        u = torch.rand(N, 1, generator=self.rng, device=self.device) if lo != hi else None
        snr_db = (torch.full((N, 1), lo, device=self.device) if u is None
                  else lo + (hi - lo) * u)  # (N, 1) each episode's average SNR
        x, z = self.source.sample(N, self.rng, snr_db.squeeze(-1))
        self._x, self._z = x.to(self.device), z.to(self.device)
        like = torch.empty(0, device=self.device)
        fading = torch.view_as_real(self.link.draw_gains(N, self.n_c, self.rng, like))  # (N, G, 2)
        seed_blocks = self._summaries(self._x).float()
        step = torch.zeros(N, 1, dtype=torch.int64, device=self.device)
        zeros = torch.zeros(N, 1, device=self.device)
        power = torch.zeros(N, B, device=self.device)
        budget = torch.ones(N, 1, device=self.device)
        out = {"fading": fading, "seed_blocks": seed_blocks, "step": step, "power": power,
               "budget": budget, "snr_db": snr_db, "latent_mse": zeros, "expected_mse": zeros,
               "psnr": zeros, "fid": zeros,
               **self._observe(fading, seed_blocks, step, power, budget, snr_db)}
        return TensorDict(out, batch_size=self.batch_size, device=self.device)

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        B = self.num_blocks
        step, budget = tensordict["step"], tensordict["budget"]  # (N, 1), (N, 1)
        a = tensordict["action"].clamp(0.0, 1.0)  # (N, 1) fraction of P_max (eq. 32)
        last = step >= B - 1
        # eq. 33: never more than what remains (less the floors of the blocks after this one);
        # the last block spends all that remains
        low, high = self.spend_limits(budget, step)
        spend = torch.where(last, budget, torch.maximum(torch.minimum(a, high), low))
        power = tensordict["power"].scatter(1, step.clamp(max=B - 1), spend)  # (N, B)
        budget = torch.where(last, torch.zeros_like(budget), (budget - spend).clamp_min(0.0))
        step = step + 1
        done = step >= B
        fading, seed_blocks = tensordict["fading"], tensordict["seed_blocks"]
        snr_db = tensordict["snr_db"]
        zeros = torch.zeros_like(budget)
        out = {"fading": fading, "seed_blocks": seed_blocks, "step": step, "power": power,
               "budget": budget, "snr_db": snr_db, "reward": zeros, "latent_mse": zeros,
               "expected_mse": zeros, "psnr": zeros, "fid": zeros, "done": done,
               "terminated": done.clone(),
               **self._observe(fading, seed_blocks, step, power, budget, snr_db)}
        if bool(done.any()):
            out.update(self._finish(fading, power, done, snr_db))
        return TensorDict(out, batch_size=self.batch_size, device=self.device)

    def expected_mse(self, power: torch.Tensor, fading: torch.Tensor, snr_db: torch.Tensor
                     ) -> torch.Tensor:
        """(N, 1) the link model's noise-averaged distortion, in latent MSE units, of powers
        (N, B) (fractions of P_max) on gains (N, groups, 2), the groups of a block averaged. A
        fixed-SNR env uses its source's :meth:`~SeedSource.link_model`; an SNR range the uniform
        model (unit-power Gaussian symbols). Gaussian seeds with ``zf`` get the ZF distortion."""
        B = self.num_blocks
        per = self.groups // B
        g = fading.square().sum(-1).double().reshape(len(power), B, per)  # (N, B, per)
        x = (power * B).double().unsqueeze(-1) * g  # received power relative to the share
        sigma2 = theory.noise_var_from_snr_db(snr_db.double())[:, :, None]  # (N, 1, 1)
        if self.equalizer == "zf" and isinstance(self.source, GaussianSeeds):
            return theory.mse_zf(sigma2, x).mean((1, 2)).unsqueeze(-1).float()
        model = self.link_model if self.fixed_snr else LinkModel.uniform(B)
        w = model.weight.to(x.device)[:, None, :] * B  # (B, 1, M)
        e = model.energy.to(x.device)[:, None, :]
        cost = (w * sigma2[..., None] / (x[..., None] * e + sigma2[..., None])).sum(-1)
        return (cost.mean((1, 2)) * model.scale).unsqueeze(-1).float()

    @torch.no_grad()
    def _finish(self, fading: torch.Tensor, power: torch.Tensor, done: torch.Tensor,
                snr_db: torch.Tensor) -> dict[str, torch.Tensor]:
        """Transmit the seeds with the chosen powers; the terminal reward of finished episodes."""
        if self._x is None:
            raise RuntimeError("MEGPowerEnv.step before reset")
        h = torch.complex(fading[..., 0], fading[..., 1])  # (N, groups)
        p_rel = power * self.num_blocks  # relative to the equal share P_max / B
        snr = snr_db.squeeze(-1)
        out = self.link(self._x, mode="eval", snr_db=snr, power=p_rel, h=h, generator=self.rng)
        csi = out["csi_db"]  # (N, segments): each block's effective SNR after equalisation
        z_hat = self.source.decode(out["x_hat"], snr, csi)
        latent_mse = (z_hat - self._z).flatten(1).square().mean(1, keepdim=True)  # (N, 1)
        if not bool(torch.isfinite(latent_mse).all()):
            raise UserError("train-ppo: the latent MSE of an episode is not finite (the decoder "
                            "diverged on an allocation); raise ppo.min_power or use "
                            "ppo.equalizer=mmse")
        res = {"latent_mse": latent_mse,
               "expected_mse": self.expected_mse(power, fading, snr_db)}
        self.outcome = {"z": self._z, "z_hat": z_hat,
                        **({"index": self.source.index} if self.source.index is not None else {})}
        psnr = fid = torch.zeros_like(latent_mse)
        if self.image_metrics:
            psnr, fid = self._image_metrics(z_hat)
            res.update(psnr=psnr, fid=fid)
        rel = latent_mse
        if not self.fixed_snr:  # an SNR range: latent MSE relative to equal power's ergodic MMSE
            # distortion at the episode's SNR, so that every SNR weighs alike in the policy loss
            rel = latent_mse / theory.ergodic_mse_mmse(theory.noise_var_from_snr_db(snr_db))
        reward = {"latent_mse": -rel, "psnr": psnr, "fid": -fid}[self.reward_kind]
        mask = done.float()
        res = {k: v.float() * mask for k, v in res.items()}
        res["reward"] = reward.float() * mask
        return res

    def _image_metrics(self, z_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 1) PSNR per UE image and (N, 1) FID of the N UE images against the perfect ones."""
        idx = self.source.index
        cached = self._perfect
        if cached is not None and idx is not None and torch.equal(cached[0], idx):
            i_0 = cached[1]  # the same seeds as the last episode batch (another policy's turn)
        else:
            i_0 = self.source.images(self._z)  # perfect images (no channel), [0, 1]
            self._perfect = (idx.clone(), i_0) if idx is not None else None
        i_g = self.source.images(z_hat)
        self.outcome.update(images=i_g, images_0=i_0)
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
    latents. ``meg`` seeds come from the codec ``meg train-codec`` trained (``codec.fc``),
    ``meg-adaptive`` seeds from the SNR-adaptive codec of that rate (trained into out_dir, named
    in ``eval.adaptive_checkpoints`` or shipped for the model). ``images`` loads the VAE so that
    episodes end in UE images (default: only when the reward needs them; the Fig. 10 evaluation
    asks for them to report FID and PSNR).
    """

    scheme = cfg.ppo.scheme
    if scheme not in SCHEMES:
        raise ConfigError("ppo.scheme", scheme, f"one of {', '.join(SCHEMES)}")
    if scheme == "gaussian":
        return GaussianSeeds(cfg.ppo.seed_dim)

    dm = build_datamodule(cfg)
    dm.prepare_data()
    dm.setup("fit")
    ds = dm.dataset("train")
    # (M, C, h, w): the whole cache (a tensor, or the memory-mapped cache); splits index into it
    z = ds.z.stack() if hasattr(ds.z, "stack") else torch.as_tensor(ds.z)
    z = z.float()
    codec = None
    if SCHEMES[scheme] is not None:
        codec = load_learned_codec(cfg, SCHEMES[scheme], float(cfg.codec.fc),
                                   latent_shape=tuple(z.shape[1:]), device=torch.device("cpu"))
    vae = None
    if images if images is not None else cfg.ppo.reward != "latent_mse":
        vae = load_pipeline(cfg, device=torch.device("cpu")).vae
    return LatentSeeds(z, codec=codec, vae=vae, splits=dm.splits, split=split)


def make_env(cfg: Any, *, num_envs: Optional[int] = None, seed: Optional[int] = None,
             source: Optional[SeedSource] = None, p_max_mw: Optional[float] = None,
             snr_db: Any = None, fid_extractor: Optional[nn.Module] = None,
             image_metrics: Optional[bool] = None, num_blocks: Optional[int] = None,
             channel: Optional[str] = None) -> MEGPowerEnv:
    """A :class:`MEGPowerEnv` from ``cfg.ppo`` (and ``cfg.channel.noise_power_mw``).

    ``source`` lets several envs (training, evaluation, a power sweep) share one seed source;
    ``snr_db`` (a number or ``[lo, hi]``) replaces the SNR of the budget; ``num_blocks`` and
    ``channel`` replace ``ppo.num_blocks`` and ``ppo.channel``.
    """

    p = cfg.ppo
    p_max = p.p_max_mw if p_max_mw is None else p_max_mw
    if not (isinstance(p_max, (int, float)) and math.isfinite(p_max) and p_max > 0):
        raise ConfigError("ppo.p_max_mw", p_max, "a number > 0 (mW)")
    if p.reward not in REWARDS:
        raise ConfigError("ppo.reward", p.reward, "one of latent_mse, psnr, fid")
    B = num_blocks or p.num_blocks
    source = source or make_source(cfg)
    if fid_extractor is None and (p.reward == "fid" or image_metrics):
        fid_extractor = make_feature_extractor(cfg.eval.fid_features,
                                               domain_features(cfg.model, cfg.eval.fid_features))
    if snr_db is None:
        snr_db = snr_from_budget(p_max, B, cfg.channel.noise_power_mw, p.avg_snr_db)
    return MEGPowerEnv(source, num_envs=num_envs or p.num_envs, num_blocks=B,
                       p_max_mw=p_max, snr_db=snr_db, reward=p.reward,
                       equalizer=p.equalizer or getattr(source, "equalizer", "mmse"),
                       seed_features=p.seed_features, min_power=p.min_power,
                       fid_extractor=fid_extractor, image_metrics=image_metrics,
                       seed=cfg.seed if seed is None else seed,
                       channel=build_channel(cfg, kind=channel or p.channel))
