"""Structured configuration: dataclass schemas + OmegaConf compose / merge / validate.

Every setting is written once, as a dataclass field with its default and a comment: the sections
below, and the ``Settings`` of each registered channel model and codec architecture, which
:func:`compose` adds as the groups ``channel.<kind>.*`` and ``codec.<arch>.*`` (the registries
are passed in by :mod:`meg_lightning.compose`, which sits above them).

Resolution order (later wins):
  1. the dataclass defaults (the schema),
  2. ``configs/presets/<preset>.yaml`` where preset is ``model`` if it names a preset
     (``tiny`` | ``mini`` | ``paper`` | ``sd15-random``), else ``paper`` (a hub id or local
     diffusers folder is treated as an SD-v1.5-like model),
  3. a command's own defaults (e.g. ``configs/demo.yaml`` for ``meg demo``),
  4. command-line overrides ``key=value`` (dot-list).

An unknown key, a wrong type or an out-of-range value raises :class:`ConfigError` whose message
is one line naming the key, the value and what was expected.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from meg_lightning.errors import ConfigError
from meg_lightning.io import atomic_write_text
from meg_lightning.registry import has_settings, settings_of

PRESETS = ("tiny", "paper", "mini", "sd15-random")
EQUALIZERS = ("zf", "mmse", "none")


def _check(key: str, value: Any, ok: bool, expected: str) -> None:
    if not ok:
        raise ConfigError(key, value, expected)


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


@dataclass
class GenerationConfig:
    """Edge-server generation settings (paper Table I for the `paper` preset)."""

    height: int = 32  # image height in pixels; must be a multiple of the VAE down-sampling factor
    width: int = 32  # image width in pixels
    num_inference_steps: int = 10  # DDIM sampling steps T (paper: 50)
    guidance_scale: float = 7.5  # classifier-free guidance weight (1.0 disables CFG)
    eta: float = 0.0  # DDIM eta (0 = deterministic DDIM)
    dtype: str = "float32"  # float32 | float16 | bfloat16 (U-Net/VAE compute dtype)
    device: str = "auto"  # auto | cpu | cuda | cuda:N

    def validate(self, p: str) -> None:
        for k in ("height", "width", "num_inference_steps"):
            v = getattr(self, k)
            _check(f"{p}.{k}", v, v > 0, "a positive integer")
        _check(f"{p}.guidance_scale", self.guidance_scale, _finite(self.guidance_scale)
               and self.guidance_scale >= 0, "a finite number >= 0")
        _check(f"{p}.eta", self.eta, _finite(self.eta) and 0 <= self.eta <= 1, "a number in [0, 1]")
        _check(f"{p}.dtype", self.dtype, self.dtype in ("float32", "float16", "bfloat16"),
               "one of float32, float16, bfloat16")
        _check(f"{p}.device", self.device, bool(re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?",
                                                             self.device)),
               "auto, cpu, mps, cuda or cuda:N")


@dataclass
class DataConfig:
    """Prompt source and the on-disk latent cache."""

    num_prompts: int = 64  # N prompts to generate latents for
    prompts: Optional[str] = None  # prompt file (.txt / .csv / .tsv / .jsonl); None = built-in set
    prompt_column: str = "prompt"  # column / key holding the prompt in .csv / .tsv / .jsonl files
    cache_dir: str = "data/latents/tiny"  # where shards + manifest are written
    gen_batch_size: int = 8  # prompts per generation batch on the edge server
    shard_size: int = 64  # latents per shard file (a shard is also the unit of resume)
    val_fraction: float = 0.1  # share of samples in the validation split
    test_fraction: float = 0.1  # share of samples in the test split
    split_seed: int = 0  # seed of the deterministic train/val/test permutation
    batch_size: int = 8  # DataLoader batch size for training on cached latents
    num_workers: int = 0  # DataLoader workers

    def validate(self, p: str) -> None:
        _check(f"{p}.num_prompts", self.num_prompts, self.num_prompts > 0, "a positive integer")
        for k in ("gen_batch_size", "shard_size", "batch_size"):
            v = getattr(self, k)
            _check(f"{p}.{k}", v, v > 0, "a positive integer")
        _check(f"{p}.num_workers", self.num_workers, self.num_workers >= 0, "an integer >= 0")
        for k in ("val_fraction", "test_fraction"):
            v = getattr(self, k)
            _check(f"{p}.{k}", v, _finite(v) and 0 <= v < 1, "a number in [0, 1)")
        s = self.val_fraction + self.test_fraction
        _check(f"{p}.val_fraction+{p}.test_fraction", s, s < 1, "a sum below 1")


@dataclass
class ChannelConfig:
    """The wireless link (conventions in README: real symbols, unit power, noise 10^(-SNR/10)).
    The settings every channel model shares; a model's own are ``channel.<kind>.*``."""

    kind: str = "awgn"  # the channel model (meg_lightning.channels: awgn | rayleigh | none | ...)
    snr_db: float = 20.0  # the codec's training SNR (dB) and the SNR of a link built from this section
    train_snr_db: Optional[list[float]] = None  # [lo, hi]: sample SNR uniformly in dB when training
    num_blocks: int = 1  # B power (and fading) blocks per seed; must divide the seed's complex symbols
    equalizer: str = "zf"  # zf | mmse | none (receiver with perfect CSI)
    noise_power_mw: float = 1.0  # N0 in mW: maps a power budget in mW to an average SNR

    def validate(self, p: str) -> None:
        _check(f"{p}.snr_db", self.snr_db, _finite(self.snr_db), "a finite number (dB)")
        if self.train_snr_db is not None:
            r = list(self.train_snr_db)
            _check(f"{p}.train_snr_db", r, len(r) == 2 and all(_finite(v) for v in r)
                   and r[0] <= r[1], "[lo, hi] with finite lo <= hi (dB)")
        _check(f"{p}.num_blocks", self.num_blocks, self.num_blocks > 0, "a positive integer")
        _check(f"{p}.equalizer", self.equalizer, self.equalizer in EQUALIZERS,
               f"one of {', '.join(EQUALIZERS)}")
        _check(f"{p}.noise_power_mw", self.noise_power_mw,
               _finite(self.noise_power_mw) and self.noise_power_mw > 0, "a number > 0 (mW)")


@dataclass
class CodecConfig:
    """Compression encoder / decoder and its training (paper Sec. III-C, Appendix A). The settings
    every architecture shares; an architecture's own are ``codec.<arch>.*``."""

    fc: float = 0.5  # compression rate: code length k = round(fc * |z|)
    arch: str = "paper"  # the architecture (meg_lightning.codecs: paper | mlp | adaptive | ...)
    lr: float = 1e-3  # Adam learning rate (Table I)
    weight_decay: float = 0.0  # Adam weight decay
    val_snrs_db: list[float] = field(default_factory=lambda: [0.0, 10.0, 20.0])  # validation SNRs
    checkpoint: Optional[str] = None  # a trained codec checkpoint (.ckpt) to evaluate / resume from
    val_loss: str = "train_snr"  # val/loss: train_snr (MSE at channel.snr_db) | mean (over val_snrs_db)
    # | linear_ratio (mean over val_snrs_db of MSE / the linear code's MSE at that SNR)
    loss: str = "mse"  # training loss: mse (eq. 27) | linear_ratio (each sample's MSE / the optimal
    # linear code's closed-form MSE at its segments' effective SNRs: every SNR and fade counts alike)
    schedule: str = "none"  # learning-rate schedule: none | cosine (to lr/100 over max_epochs) | plateau
    early_stop_patience: Optional[int] = None  # stop after this many epochs without a better val/loss
    awgn_fraction: float = 0.0  # fading training: share of samples sent with h = 1 (one model for both)

    def validate(self, p: str) -> None:
        _check(f"{p}.fc", self.fc, _finite(self.fc) and 0 < self.fc <= 1, "a number in (0, 1]")
        _check(f"{p}.val_loss", self.val_loss,
               self.val_loss in ("train_snr", "mean", "linear_ratio"),
               "one of train_snr, mean, linear_ratio")
        _check(f"{p}.loss", self.loss, self.loss in ("mse", "linear_ratio"),
               "one of mse, linear_ratio")
        _check(f"{p}.schedule", self.schedule, self.schedule in ("none", "cosine", "plateau"),
               "one of none, cosine, plateau")
        _check(f"{p}.awgn_fraction", self.awgn_fraction,
               _finite(self.awgn_fraction) and 0 <= self.awgn_fraction <= 1, "a number in [0, 1]")
        if self.early_stop_patience is not None:
            _check(f"{p}.early_stop_patience", self.early_stop_patience,
                   self.early_stop_patience > 0, "a positive integer or null")
        _check(f"{p}.lr", self.lr, _finite(self.lr) and self.lr > 0, "a number > 0")
        _check(f"{p}.weight_decay", self.weight_decay,
               _finite(self.weight_decay) and self.weight_decay >= 0, "a number >= 0")
        _check(f"{p}.val_snrs_db", list(self.val_snrs_db), len(self.val_snrs_db) > 0,
               "a non-empty list of finite dB values")
        for v in self.val_snrs_db:
            _check(f"{p}.val_snrs_db", list(self.val_snrs_db), _finite(v), "a list of finite dB values")


#: the seed sources of the power-control env (meg_lightning.power.env.SCHEMES)
PPO_SCHEMES = ("gaussian", "feature", "meg", "meg-adaptive")


@dataclass
class PPOConfig:
    """Seed power control by PPO (paper Sec. IV, Algorithm 3)."""

    scheme: str = "gaussian"  # gaussian (synthetic unit seeds: fast proxy) | feature | meg | meg-adaptive
    channel: str = "rayleigh"  # the fading channel model of the power-controlled link
    reward: str = "latent_mse"  # latent_mse | psnr | fid (eq. 34)
    num_blocks: int = 8  # fading blocks per seed = episode length
    seed_dim: int = 512  # gaussian scheme: seed length k in real symbols (2 per channel use)
    seed_features: int = 4  # size of the per-block seed summary in the state (chunk energies)
    equalizer: Optional[str] = None  # mmse | zf; null: the codec's own (meg, meg-adaptive), else mmse
    p_max_mw: float = 8.0  # total power budget per seed (30c), in mW
    avg_snr_db: Optional[float] = 20.0  # if set, N0 is chosen so that P_max / B / N0 equals this SNR
    train_snr_db: Optional[list[float]] = None  # [lo, hi]: train one policy over these average
    # SNRs (each episode draws one; the policy observes it), e.g. for every Fig. 10 budget
    min_power: float = 0.01  # every block's floor, relative to the equal share P_max / B
    action: str = "residual"  # residual (a change of the equal share of what remains) | absolute
    # (the paper's eq. 32: a fraction of P_max)
    num_envs: int = 256  # parallel episodes per batch (FID reward: the set FID is computed over)
    frames_per_batch: int = 8192  # environment steps per PPO iteration (>= num_envs x num_blocks)
    total_frames: int = 400_000  # total environment steps
    lr: float = 3e-4  # Adam learning rate (actor and critic)
    gamma: float = 1.0  # discount (finite horizon, terminal reward)
    lmbda: float = 0.9  # GAE lambda (0.9: the critic is accurate, see power/train.py)
    clip_epsilon: float = 0.2  # PPO clip range (eq. 38)
    entropy_coef: float = 1e-3  # c2 in eq. 37
    critic_coef: float = 1.0  # c1 in eq. 37
    num_epochs: int = 4  # optimisation epochs per batch
    minibatch_size: int = 1024  # PPO minibatch size
    hidden: int = 128  # width of actor / critic MLPs
    eval_episodes: int = 10_000  # held-out channel draws shared by all policies
    checkpoint: Optional[str] = None  # policy checkpoint to resume from / evaluate
    fig10_powers: Optional[list[float]] = None  # budgets (mW): also run the Fig. 10 sweep (CSV)
    block_counts: Optional[list[int]] = None  # also train and compare at these block counts
    block_frames: Optional[int] = None  # training frames of each other block count (null:
    # total_frames; 0: no training, the main policy acts at that block count as it is)

    def validate(self, p: str) -> None:
        if self.fig10_powers is not None:
            _check(f"{p}.fig10_powers", list(self.fig10_powers),
                   len(self.fig10_powers) > 0 and all(_finite(v) and v > 0 for v in self.fig10_powers),
                   "a non-empty list of budgets > 0 (mW) or null")
            _no_duplicates(f"{p}.fig10_powers", list(self.fig10_powers))
        if self.block_counts is not None:
            v = list(self.block_counts)
            _check(f"{p}.block_counts", v, len(v) > 0 and all(isinstance(b, int) and b > 0
                                                             for b in v),
                   "a non-empty list of positive block counts or null")
            _no_duplicates(f"{p}.block_counts", v)
        if self.train_snr_db is not None:
            r = list(self.train_snr_db)
            _check(f"{p}.train_snr_db", r, len(r) == 2 and all(_finite(v) for v in r)
                   and r[0] <= r[1], "[lo, hi] with finite lo <= hi (dB) or null")
        _check(f"{p}.scheme", self.scheme, self.scheme in PPO_SCHEMES,
               f"one of {', '.join(PPO_SCHEMES)}")
        _check(f"{p}.reward", self.reward, self.reward in ("latent_mse", "psnr", "fid"),
               "one of latent_mse, psnr, fid")
        _check(f"{p}.p_max_mw", self.p_max_mw, _finite(self.p_max_mw) and self.p_max_mw > 0,
               "a number > 0 (mW)")
        if self.equalizer is not None:
            _check(f"{p}.equalizer", self.equalizer, self.equalizer in ("mmse", "zf"),
                   "mmse, zf or null (the scheme's own)")
        _check(f"{p}.action", self.action, self.action in ("residual", "absolute"),
               "residual or absolute")
        _check(f"{p}.min_power", self.min_power, _finite(self.min_power)
               and 0 <= self.min_power < 1, "a number in [0, 1) (of the equal share)")
        if self.avg_snr_db is not None:
            _check(f"{p}.avg_snr_db", self.avg_snr_db, _finite(self.avg_snr_db),
                   "a finite number (dB) or null")
        if self.block_frames is not None:
            _check(f"{p}.block_frames", self.block_frames,
                   isinstance(self.block_frames, int) and self.block_frames >= 0,
                   "an integer >= 0 (0: the main policy as it is) or null (ppo.total_frames)")
        for k in ("num_blocks", "seed_dim", "seed_features", "num_envs", "frames_per_batch",
                  "total_frames", "num_epochs", "minibatch_size", "hidden", "eval_episodes"):
            v = getattr(self, k)
            _check(f"{p}.{k}", v, v > 0, "a positive integer")
        for k in ("gamma", "lmbda"):
            v = getattr(self, k)
            _check(f"{p}.{k}", v, _finite(v) and 0 <= v <= 1, "a number in [0, 1]")
        _check(f"{p}.lr", self.lr, _finite(self.lr) and self.lr > 0, "a number > 0")
        _check(f"{p}.clip_epsilon", self.clip_epsilon,
               _finite(self.clip_epsilon) and 0 < self.clip_epsilon < 1, "a number in (0, 1)")
        episode = self.num_envs * self.num_blocks
        _check(f"{p}.frames_per_batch", self.frames_per_batch, self.frames_per_batch >= episode,
               f">= ppo.num_envs x ppo.num_blocks = {episode} (a batch must hold whole episodes)")


def _no_duplicates(key: str, values: list) -> None:
    """Each entry of a swept list once: a duplicate would sweep (and write) the same cells twice.
    Numbers count as equal when the cell keys spell them alike (``0.5`` and ``0.50``, ``0`` and
    ``0.0``: ``{:g}``)."""
    seen: dict[Any, Any] = {}
    for v in values:
        ident = f"{v:g}" if _finite(v) else v
        if ident in seen:
            same = "" if seen[ident] == v and str(seen[ident]) == str(v) else \
                f" (the same cell as {seen[ident]!r})"
            raise ConfigError(key, values, f"each value once: {v!r} is given twice{same}")
        seen[ident] = v


@dataclass
class EvalConfig:
    """The evaluation sweep (paper Sec. V)."""

    schemes: list[str] = field(default_factory=lambda: ["centralized", "feature", "meg", "linear",
                                                         "digital"])  # evaluation.registry
    snrs_db: list[float] = field(default_factory=lambda: [float(s) for s in range(-30, 31, 5)])
    fcs: list[float] = field(default_factory=lambda: [0.5])  # compression rates for `meg`/`linear`
    scheme_fcs: dict[str, list[float]] = field(default_factory=dict)  # scheme -> its own fcs
    channels: list[str] = field(default_factory=lambda: ["awgn", "rayleigh"])  # channel kinds
    scheme_channels: dict[str, list[str]] = field(default_factory=dict)  # scheme -> its own kinds
    num_images: Optional[int] = None  # test images per cell; null: the whole test split (FID is a
    # set metric: use hundreds when possible; the count is reported)
    batch_size: int = 16  # latents per forward pass in the sweep (memory vs speed)
    bootstrap: int = 200  # bootstrap resamples for the FID confidence interval
    fid_features: str = "auto"  # auto | inception | pixels | mini (auto: see metrics.fid)
    codec_checkpoints: dict[str, str] = field(default_factory=dict)  # fc -> codec checkpoint path
    adaptive_checkpoints: dict[str, str] = field(default_factory=dict)  # fc -> meg-adaptive codec
    pretrained: bool = False  # meg-adaptive: the codecs shipped for the model, even if out_dir has one
    digital_codec: str = "png"  # png | jpeg: source code of the `digital-image` scheme
    linear_power: str = "average"  # `linear`: average (its closed form's constraint: unit power on
    # average over the training latents; a seed's power follows its latent) | seed (each seed at
    # unit power, the constraint every other scheme's channel imposes)
    ue_steps: int = 10  # X+dm: at most this many DDIM steps at the UE (each 2 U-Net evals w/ CFG)
    dm_calibration: int = 128  # X+dm: training latents that measure the error variance sigma_e^2
    results: str = "results.csv"  # results file name inside out_dir

    def validate(self, p: str) -> None:
        """What needs no registry; the names in ``schemes``, ``channels`` and the keys of the
        per-scheme maps are checked against the registries by :mod:`meg_lightning.compose`."""
        for k in ("schemes", "snrs_db", "fcs", "channels"):
            v = list(getattr(self, k))
            # an empty list is a sweep of nothing: a typo, never what a user wants
            _check(f"{p}.{k}", v, len(v) > 0, "a non-empty list")
            _no_duplicates(f"{p}.{k}", v)
        for k in ("scheme_fcs", "scheme_channels"):
            for name, v in getattr(self, k).items():
                if isinstance(v, (list, tuple)):
                    _no_duplicates(f"{p}.{k}.{name}", list(v))
        for f in self.fcs:
            _check(f"{p}.fcs", list(self.fcs), _finite(f) and 0 < f <= 1, "a list of numbers in (0, 1]")
        for name, fcs in self.scheme_fcs.items():
            v = list(fcs) if isinstance(fcs, (list, tuple)) or hasattr(fcs, "__len__") else [fcs]
            _check(f"{p}.scheme_fcs.{name}", v,
                   len(v) > 0 and all(_finite(f) and 0 < f <= 1 for f in v),
                   "a non-empty list of numbers in (0, 1]")
        for name, kinds in self.scheme_channels.items():
            v = list(kinds) if isinstance(kinds, (list, tuple)) else [kinds]
            _check(f"{p}.scheme_channels.{name}", v, len(v) > 0, "a non-empty list of channel kinds")
        for s in self.snrs_db:
            _check(f"{p}.snrs_db", list(self.snrs_db), _finite(s), "a list of finite dB values")
        if self.num_images is not None:
            _check(f"{p}.num_images", self.num_images, self.num_images > 0,
                   "a positive integer or null")
        _check(f"{p}.batch_size", self.batch_size, self.batch_size > 0, "a positive integer")
        _check(f"{p}.bootstrap", self.bootstrap, self.bootstrap >= 0, "an integer >= 0")
        _check(f"{p}.fid_features", self.fid_features,
               self.fid_features in ("auto", "inception", "pixels", "mini"),
               "one of auto, inception, pixels, mini")
        _check(f"{p}.digital_codec", self.digital_codec, self.digital_codec in ("png", "jpeg"),
               "one of png, jpeg")
        _check(f"{p}.linear_power", self.linear_power, self.linear_power in ("average", "seed"),
               "one of average, seed")
        _check(f"{p}.ue_steps", self.ue_steps, self.ue_steps >= 1, "an integer >= 1")
        _check(f"{p}.dm_calibration", self.dm_calibration, self.dm_calibration >= 1,
               "an integer >= 1")
        _check(f"{p}.results", self.results, self.results.endswith(".csv")
               and Path(self.results).name == self.results and self.results != ".csv",
               "a file name ending in .csv (it is written inside {out_dir}/eval)")


ACCESS = ("tdma", "noma")
OBJECTIVES = ("mean", "maxmin")  # the learned allocation's objectives (multiuser.allocation)
ALLOC_CHANNELS = ("awgn", "rayleigh")
#: how the sweep gives users their average SNRs (users.placement)
PLACEMENTS = ("spread", "listed", "umi")
#: the strong NOMA user's cancellation of an analog seed (docs/MULTIUSER.md)
SIC = ("lmmse", "reencode")


@dataclass
class UsersConfig:
    """K users in one frame (`meg eval-multiuser`, docs/MULTIUSER.md): the frame has the channel
    uses of ONE user's full-rate transmission of the scheme at fc, shared by the K users."""

    k: int = 1  # users per frame (one frame: meg_lightning.multiuser.access.frame_links)
    snrs_db: Optional[list[float]] = None  # average SNR of each of the k users (dB); null: all at
    # the cell's SNR (spread by users.spread_db in the sweep)
    access: str = "tdma"  # tdma (per-user slots) | noma (pairs superposed with a power split)
    shares: Optional[list[float]] = None  # TDMA slot shares of the k users (> 0, sum 1); null: equal
    noma_power: float = 0.8  # NOMA: power share of the weak user of a pair (the strong gets the rest)
    objectives: list[str] = field(default_factory=lambda: ["mean", "maxmin"])  # train-alloc: mean
    # (mean user quality) and / or maxmin (the worst user's: fairness)
    alloc_fc: float = 0.5  # train-alloc: the frame has round(alloc_fc |z|) real channel uses
    alloc_snr_db: list[float] = field(default_factory=lambda: [0.0, 20.0])  # train-alloc: the
    # users' average SNRs, drawn per frame uniformly in dB over [lo, hi]
    alloc_channel: str = "rayleigh"  # train-alloc: rayleigh (a gain per user and frame) | awgn
    alloc_frames: int = 262_144  # train-alloc: PPO training frames (one step each) per policy
    alloc_eval_frames: int = 4096  # train-alloc: held-out frames shared by every policy
    alloc_image_frames: int = 64  # train-alloc: held-out frames whose users' images are also
    # sent (the linear code at the allocated symbols and SINR) and rendered: PSNR; 0 = none
    sic: str = "reencode"  # NOMA: the strong user's cancellation of an analog coded seed:
    # reencode (decode with the weak user's decoder, re-encode, subtract) | lmmse (per-symbol
    # LMMSE estimate: removes nothing); digital always decodes and subtracts the codeword
    spread_db: float = 10.0  # sweep: the K users' average SNRs equally spaced over the cell's SNR
    # +- spread_db / 2 (one user: the cell's SNR)
    ks: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16])  # sweep: the K values
    accesses: list[str] = field(default_factory=lambda: ["tdma", "noma"])  # sweep: access schemes
    stop_at_miss: bool = True  # sweep: skip the K above the first one (in increasing order) whose
    # users do not all meet the target (users served is then known); false: run every K
    psnr_target_db: float = 20.0  # quality target: every user's mean PSNR >= this (dB) ...
    accuracy_target: float = 0.9  # ... and its semantic accuracy >= this (dropped for a model
    # without a judge: PSNR only)
    fid_target: Optional[float] = None  # ... and, when set, its mini-FID against its own I_0 <= this
    placement: str = "spread"  # the users' average SNRs: spread (equally spaced around the cell's
    # SNR by spread_db) | listed (users.snrs_db, the first K of them) | umi (path loss of users
    # dropped in a 3GPP UMi-Street Canyon cell: meg_lightning.multiuser.placement)
    min_distance_m: float = 10.0  # umi: users dropped uniformly in area at 2D distances from the
    # edge server in [min_distance_m, cell_radius_m] (TR 38.901's UMi formulas hold from 10 m)
    cell_radius_m: float = 200.0  # umi: the cell's radius (m; an urban small cell)
    carrier_ghz: float = 3.5  # umi: carrier frequency (GHz; 5G n78), in TR 38.901's 0.5-100
    tx_power_dbm: float = 30.0  # umi: the edge server's transmit power (dBm)
    bandwidth_mhz: float = 20.0  # umi: the noise bandwidth (MHz)
    noise_figure_db: float = 9.0  # umi: the UE receiver's noise figure (dB)
    shadowing: bool = True  # umi: log-normal shadow fading (sigma 4 dB LOS, 7.82 dB NLOS)

    def validate(self, p: str) -> None:
        k = self.k
        _check(f"{p}.k", k, isinstance(k, int) and not isinstance(k, bool) and k >= 1,
               "a positive integer")
        if self.snrs_db is not None:
            v = list(self.snrs_db)
            _check(f"{p}.snrs_db", v, len(v) == k and all(_finite(s) for s in v),
                   f"null or a list of users.k={k} finite dB values")
        _check(f"{p}.access", self.access, self.access in ACCESS, f"one of {', '.join(ACCESS)}")
        if self.shares is not None:
            v = list(self.shares)
            _check(f"{p}.shares", v, len(v) == k and all(_finite(s) and s > 0 for s in v)
                   and math.isclose(sum(v), 1.0, abs_tol=1e-6),
                   f"null or a list of users.k={k} numbers > 0 that sum to 1")
        _check(f"{p}.noma_power", self.noma_power,
               _finite(self.noma_power) and 0 <= self.noma_power <= 1, "a number in [0, 1]")
        obj = list(self.objectives)
        _check(f"{p}.objectives", obj, len(obj) > 0 and all(o in OBJECTIVES for o in obj),
               f"a non-empty list from {', '.join(OBJECTIVES)}")
        _no_duplicates(f"{p}.objectives", obj)
        _check(f"{p}.alloc_fc", self.alloc_fc, _finite(self.alloc_fc) and 0 < self.alloc_fc <= 1,
               "a rate in (0, 1]")
        r = list(self.alloc_snr_db)
        _check(f"{p}.alloc_snr_db", r, len(r) == 2 and all(_finite(v) for v in r) and r[0] <= r[1],
               "[lo, hi] with finite lo <= hi (dB)")
        _check(f"{p}.alloc_channel", self.alloc_channel, self.alloc_channel in ALLOC_CHANNELS,
               f"one of {', '.join(ALLOC_CHANNELS)}")
        for key, low in (("alloc_frames", 1), ("alloc_eval_frames", 2), ("alloc_image_frames", 0)):
            v = getattr(self, key)
            _check(f"{p}.{key}", v, isinstance(v, int) and not isinstance(v, bool) and v >= low,
                   f"an integer >= {low}")
        _check(f"{p}.sic", self.sic, self.sic in SIC, f"one of {', '.join(SIC)}")
        _check(f"{p}.spread_db", self.spread_db, _finite(self.spread_db) and self.spread_db >= 0,
               "a finite number >= 0 (dB)")
        ks = list(self.ks)
        _check(f"{p}.ks", ks, len(ks) > 0 and all(isinstance(x, int) and not isinstance(x, bool)
                                                  and x >= 1 for x in ks),
               "a non-empty list of positive integers")
        _no_duplicates(f"{p}.ks", ks)
        acc = list(self.accesses)
        _check(f"{p}.accesses", acc, len(acc) > 0 and all(a in ACCESS for a in acc),
               f"a non-empty list from {', '.join(ACCESS)}")
        _no_duplicates(f"{p}.accesses", acc)
        _check(f"{p}.psnr_target_db", self.psnr_target_db, _finite(self.psnr_target_db),
               "a finite number (dB)")
        _check(f"{p}.accuracy_target", self.accuracy_target,
               _finite(self.accuracy_target) and 0 <= self.accuracy_target <= 1,
               "a number in [0, 1]")
        if self.fid_target is not None:
            _check(f"{p}.fid_target", self.fid_target,
                   _finite(self.fid_target) and self.fid_target > 0, "null or a number > 0")
        _check(f"{p}.placement", self.placement, self.placement in PLACEMENTS,
               f"one of {', '.join(PLACEMENTS)}")
        if self.placement == "listed":
            _check(f"{p}.snrs_db", self.snrs_db, self.snrs_db is not None
                   and max(ks) <= len(self.snrs_db),
                   f"a list of at least max(users.ks)={max(ks)} dB values with "
                   "users.placement=listed (and users.k its length)")
        _check(f"{p}.min_distance_m", self.min_distance_m,
               _finite(self.min_distance_m) and self.min_distance_m >= 10,
               "a number >= 10 (m; TR 38.901's UMi path loss holds from 10 m)")
        _check(f"{p}.cell_radius_m", self.cell_radius_m,
               _finite(self.cell_radius_m) and self.min_distance_m < self.cell_radius_m <= 5000,
               f"a number in (users.min_distance_m={self.min_distance_m:g}, 5000] (m)")
        _check(f"{p}.carrier_ghz", self.carrier_ghz,
               _finite(self.carrier_ghz) and 0.5 <= self.carrier_ghz <= 100,
               "a number in [0.5, 100] (GHz; TR 38.901's range)")
        _check(f"{p}.tx_power_dbm", self.tx_power_dbm, _finite(self.tx_power_dbm),
               "a finite number (dBm)")
        _check(f"{p}.bandwidth_mhz", self.bandwidth_mhz,
               _finite(self.bandwidth_mhz) and self.bandwidth_mhz > 0, "a number > 0 (MHz)")
        _check(f"{p}.noise_figure_db", self.noise_figure_db,
               _finite(self.noise_figure_db) and self.noise_figure_db >= 0,
               "a finite number >= 0 (dB)")
        _check(f"{p}.shadowing", self.shadowing, isinstance(self.shadowing, bool),
               "true or false")


@dataclass
class WandbConfig:
    project: str = "meg_lightning"  # W&B project
    mode: str = "offline"  # offline | online | disabled (WANDB_MODE in the environment wins)
    entity: Optional[str] = None  # W&B entity (team / user)


#: the Trainer settings of every run unless set (``trainer.<key>=...``)
TRAINER_DEFAULTS = {"accelerator": "auto", "devices": 1, "max_epochs": 20, "log_every_n_steps": 10}


@dataclass
class MegConfig:
    """The whole configuration. CLI keys are dotted paths into this tree."""

    model: str = "tiny"  # tiny | paper | mini | sd15-random | a hub id | a local diffusers folder
    seed: int = 0  # base seed: sample i of the cache uses seed_for(seed, i)
    out_dir: str = "data/runs"  # where run outputs (checkpoints, logs, results) go
    logger: str = "wandb"  # wandb | csv | tensorboard | none
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    data: DataConfig = field(default_factory=DataConfig)
    channel: ChannelConfig = field(default_factory=ChannelConfig)
    codec: CodecConfig = field(default_factory=CodecConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    trainer: dict[str, Any] = field(default_factory=lambda: dict(TRAINER_DEFAULTS))  # passed to
    # lightning.Trainer as-is (any Trainer argument: trainer.max_epochs=3 ...)

    def validate(self) -> "MegConfig":
        """Every section's own checks (the registry names: :func:`validate_groups`)."""
        _check("logger", self.logger, self.logger in ("wandb", "csv", "tensorboard", "none"),
               "one of wandb, csv, tensorboard, none")
        _check("model", self.model, bool(self.model),
               "a preset (tiny, paper, mini, sd15-random), hub id or folder")
        # numpy and Lightning seed with an unsigned 32-bit integer
        _check("seed", self.seed, 0 <= self.seed < 2**32, f"an integer in [0, {2**32 - 1}]")
        for key in ("out_dir", "data.cache_dir"):
            v = self.out_dir if key == "out_dir" else self.data.cache_dir
            _check(key, v, bool(str(v).strip()), "a folder path")
        for name in ("generation", "data", "channel", "codec", "ppo", "eval"):
            getattr(self, name).validate(name)
        _check("wandb.mode", self.wandb.mode, self.wandb.mode in ("offline", "online", "disabled"),
               "one of offline, online, disabled")
        return self

    @property
    def preset(self) -> str:
        return self.model if self.model in PRESETS else "paper"


def config_dir() -> Path:
    """The folder holding the YAML configs (env ``MEG_CONFIG_DIR`` wins)."""
    if os.environ.get("MEG_CONFIG_DIR"):
        return Path(os.environ["MEG_CONFIG_DIR"])
    pkg = Path(__file__).resolve().parent / "configs"  # installed wheel
    if pkg.is_dir():
        return pkg
    return Path(__file__).resolve().parents[2] / "configs"  # source checkout / editable install


#: OmegaConf's type names -> what a user types
_TYPE_WORDS = {"Integer": "an integer", "Float": "a number", "Boolean": "true or false",
               "String": "a string"}


def _omegaconf_error(e: OmegaConfBaseException, overrides: list[str]) -> ConfigError:
    """One ConfigError from OmegaConf's exception, in our words: the key as the user typed it (an
    unknown section ``trainr`` is reported as the override ``trainr.max_epochs``), the value that
    was used (the last of duplicated keys) and what was expected."""
    key = getattr(e, "full_key", None) or ""
    msg = str(e).splitlines()[0]
    pairs = [o.split("=", 1) for o in overrides]
    exact = [v for k, v in pairs if k == key]
    below = [(k, v) for k, v in pairs if key and k.startswith(key + ".")]
    if exact:
        value: Any = exact[-1]
    elif below:
        key, value = below[-1]
    else:
        value = next((v for k, v in reversed(pairs) if k == key), None)
    if value is None:  # inside a mapping given whole ({meg: awgn}): OmegaConf quotes the value
        m = re.search(r"Value '([^']*)'|Value (\S+) \(", msg)
        value = next((g for g in m.groups() if g is not None), None) if m else None
    if not key:
        # a merge error without a key: a whole section given a plain value (``data=5``)
        sections = [f.name for f in dataclasses.fields(MegConfig)
                    if dataclasses.is_dataclass(f.default_factory)
                    or f.name == "trainer"]
        section = next((k for k, _ in reversed(pairs) if k in sections), None)
        key, value = (section, dict(pairs).get(section)) if section else ("override", overrides)
        return ConfigError(key, value, "a key inside this section (e.g. data.num_prompts=8; "
                           "see `meg <command> --help`)")
    if "not in" in msg or "Key '" in msg and "not" in msg:
        return ConfigError(key, value, "a known key (see `meg <command> --help`)")
    m = re.search(r"could not be converted to (\w+)", msg)
    if m:
        return ConfigError(key, value, _TYPE_WORDS.get(m.group(1), f"a {m.group(1).lower()}"))
    if "ListConfig" in msg or "list, or tuple" in msg or "type hint 'typing.List" in msg:
        return ConfigError(key, value, "a list, e.g. [a,b]")
    if "to Dict[" in msg:
        return ConfigError(key, value, "a mapping, e.g. {key: value}")
    if "DictConfig" in msg or "Merge error" in msg:
        return ConfigError(key, value, "a key inside this section (see `meg <command> --help`)")
    if "Non optional field" in msg or "None" in msg:
        return ConfigError(key, value, "a value (this key cannot be empty or null)")
    return ConfigError(key, value, msg)


#: (section, the field naming its member) -> the registry of the members (``meg_lightning.registry``)
Groups = Mapping[str, tuple[str, Any]]


def _with_settings(base: type, registry: Any) -> type:
    """``base`` plus one field per registered member with settings: ``<section>.<name>.*``."""
    own = [(name, settings_of(cls), field(default_factory=settings_of(cls)))
           for name, cls in registry.items() if has_settings(cls)]
    return dataclasses.make_dataclass(base.__name__, own, bases=(base,))


def schema(groups: Groups, sections: Optional[Mapping[str, type]] = None) -> type:
    """The :class:`MegConfig` schema with every group's member settings (``channel.<kind>.*``,
    ``codec.<arch>.*``) and a command's own ``sections`` (name -> dataclass)."""
    fields = [(name, cls, field(default_factory=cls)) for name, cls in (sections or {}).items()]
    for section, (_, registry) in groups.items():
        base = next(f.type for f in dataclasses.fields(MegConfig) if f.name == section)
        base = base if isinstance(base, type) else globals()[base]
        cls = _with_settings(base, registry)
        fields.append((section, cls, field(default_factory=cls)))
    return dataclasses.make_dataclass("MegConfig", fields, bases=(MegConfig,))


def validate_groups(cfg: MegConfig, groups: Groups) -> None:
    """Each group names a registered member, and every member's settings are valid."""
    for section, (selector, registry) in groups.items():
        sec = getattr(cfg, section)
        name = getattr(sec, selector)
        _check(f"{section}.{selector}", name, name in registry,
               f"one of {', '.join(registry.names())}")
        for member in registry.names():
            own = getattr(sec, member, None)
            if own is not None and hasattr(own, "validate"):
                own.validate(f"{section}.{member}")


def compose(overrides: Sequence[str] = (), *, groups: Groups = {},
            defaults: Sequence[Path] = (), checks: Sequence[Callable[[MegConfig], None]] = (),
            sections: Optional[Mapping[str, type]] = None) -> MegConfig:
    """Compose the schema (with ``groups`` and a command's ``sections``), the preset, the
    ``defaults`` YAML files and the ``key=value`` overrides; validate (then ``checks``, each
    raising ConfigError)."""
    overrides = list(overrides)
    for o in overrides:
        if "=" not in o or o.startswith("="):
            raise ConfigError("override", o, "key=value")
    try:
        cli = OmegaConf.from_dotlist(overrides)
    except OmegaConfBaseException as e:
        raise ConfigError("override", " ".join(overrides), f"valid key=value pairs ({e})") from None
    layers: list[DictConfig] = [OmegaConf.load(f) for f in defaults]
    model = cli.get("model", None)
    if model is None:
        for layer in layers:
            model = layer.get("model", model)
    preset = model if model in PRESETS else "paper" if model else "tiny"
    pf = config_dir() / "presets" / f"{preset}.yaml"
    if pf.exists():
        layers.insert(0, OmegaConf.load(pf))
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema(groups, sections)), *layers, cli)
        cfg: MegConfig = OmegaConf.to_object(merged)  # type: ignore[assignment]
    except OmegaConfBaseException as e:
        raise _omegaconf_error(e, overrides) from None
    cfg.validate()
    for name in sections or {}:
        section = getattr(cfg, name)
        if hasattr(section, "validate"):
            section.validate(name)
    validate_groups(cfg, groups)
    for check in checks:
        check(cfg)
    return cfg


def to_dict(cfg: MegConfig) -> dict[str, Any]:
    """The config as plain containers (what OmegaConf's ``to_container`` of it gives; a test pins
    that): ``dataclasses.asdict``, 100x faster (0.3 against 30 ms), as the sweep writes it after
    every cell and PPO with every checkpoint."""
    return dataclasses.asdict(cfg)


def to_yaml(cfg: MegConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def config_hash(section: Any) -> str:
    """Stable short hash of a config (or any JSON-able part of it)."""
    if not isinstance(section, (dict, list, str, int, float, type(None))):
        section = OmegaConf.to_container(OmegaConf.structured(section), resolve=True)
    blob = json.dumps(section, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


#: data settings that change how latents are produced or stored, not which latents a run sees
_DATA_IO_KEYS = ("num_workers", "gen_batch_size", "batch_size", "shard_size", "cache_dir")


def data_id(cfg: MegConfig) -> str:
    """Fingerprint of the latents and the train/val/test split a run sees: the model, the seed,
    the generation settings (not the device) and the data settings except I/O ones. A codec
    records it, so that one trained on other latents (another model, prompts or split) is not
    silently resumed or evaluated."""
    d = to_dict(cfg)
    return config_hash({"model": d["model"], "seed": d["seed"],
                        "generation": {k: v for k, v in d["generation"].items() if k != "device"},
                        "data": {k: v for k, v in d["data"].items() if k not in _DATA_IO_KEYS}})


def save_resolved(cfg: MegConfig, folder: str | Path, name: str = "config.yaml") -> Path:
    """Write the resolved config beside an output (atomically)."""
    path = Path(folder) / name
    atomic_write_text(path, to_yaml(cfg))
    return path
