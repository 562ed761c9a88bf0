"""Train the ``mini`` text-to-image model and its attribute classifier, with Lightning, on a CPU.

    meg train-mini [mini.key=value ...]      (make train-mini ARGS="mini.key=value")

Stages (each resumable: rerunning the same command skips finished stages and continues an
interrupted one from its ``last.ckpt``):

1. ``vae``: ``AutoencoderKL`` on rendered shapes, MSE reconstruction + a small KL term. Then the
   training images are encoded once (posterior mean and std cached to ``latents.pt``) and the
   ``scaling_factor`` is set to 1 / std of the latents, as SD did with 0.18215.
2. ``classifier``: the attribute CNN of :mod:`meg_lightning.mini.classifier` (independent of
   the generator; trained on all 900 combinations, since it is the judge, not the student).
3. ``unet``: ``UNet2DConditionModel`` + ``CLIPTextModel`` trained jointly on the cached latents
   with the epsilon objective of SD-v1.5 (same noise schedule), captions dropped to "" with
   probability ``caption_dropout`` so that classifier-free guidance works; EMA weights are kept.
   The EMA weights are saved as a ``StableDiffusionPipeline`` (safetensors, float16, DDIM).
4. ``eval``: I_0 for the held-out prompts through the project's own generation path
   (:func:`~meg_lightning.generation.load_pipeline` on the saved folder, ``generate_latents``,
   ``decode_latents``), judged by the classifier: semantic accuracy, saved to ``metrics.json``.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

import lightning as L
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, StableDiffusionPipeline
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms.v2.functional import gaussian_blur

from meg_lightning.config import GenerationConfig, MegConfig
from meg_lightning.errors import ConfigError
from meg_lightning.generation import decode_latents, generate_latents, load_pipeline, seed_for
from meg_lightning.generation.tiny import sd_ddim_scheduler
from meg_lightning.io import atomic_write_json
from meg_lightning.metrics.image import psnr_per_image
from meg_lightning.mini.classifier import (
    WEIGHTS_DIR,
    AttributeClassifier,
    attribute_matches,
    load_classifier,
    predict_attributes,
    save_classifier,
)
from meg_lightning.mini.dataset import (
    ATTRIBUTES,
    ShapesDataset,
    combinations,
    heldout_prompts,
    make_images,
)
from meg_lightning.mini.model import (
    MiniModelConfig,
    build_text_encoder,
    build_unet,
    build_vae,
    encode_text,
    mini_tokenizer,
)

STAGES = ("vae", "classifier", "unet", "eval")


@dataclass
class MiniTrainConfig:
    """Everything ``make train-mini`` reproduces (defaults: the shipped weights)."""

    out_dir: str = "data/runs/mini"  # checkpoints, CSV logs and the latent cache (resumable)
    weights_dir: Optional[str] = None  # pipeline/ + classifier.* go here; None = the package's
    seed: int = 0  # seeds data order, initialisation, caption dropout and noise
    num_threads: int = 2  # torch threads (the shipped v2 run used 2; with 1 the run is ~1.6x
    #                       slower on an idle 2-core machine and sums in another order)
    stages: list[str] = field(default_factory=lambda: list(STAGES))  # stages to run, in order
    model: MiniModelConfig = field(default_factory=MiniModelConfig)  # network sizes
    checkpoint_every: int = 100  # optimiser steps between resumable checkpoints
    # stage 1: VAE
    vae_steps: int = 2500  # optimiser steps (each batch is freshly rendered: no epochs)
    vae_batch_size: int = 32  # images per step
    vae_lr: float = 2e-3  # AdamW peak learning rate (warm-up, then cosine to 10%)
    vae_kl_weight: float = 2e-5  # KL(q(z|x) || N(0, I)) per latent element, against MSE per pixel
    num_latents: int = 16384  # training images encoded once for the U-Net stage
    # stage 2: classifier
    classifier_steps: int = 3000  # optimiser steps on freshly rendered images of all combinations
    classifier_batch_size: int = 64  # images per step
    classifier_lr: float = 2e-3  # AdamW peak learning rate
    # stage 3: U-Net + text encoder
    unet_steps: int = 5000  # optimiser steps
    unet_batch_size: int = 64  # latents per step
    unet_lr: float = 1e-3  # AdamW peak learning rate (warm-up, then cosine to 10%)
    caption_dropout: float = 0.1  # P(caption -> "") in training: the unconditional branch of CFG
    ema_decay: float = 0.999  # EMA of U-Net and text-encoder weights (what is saved)
    # stage 4: evaluation of I_0 on held-out prompts
    eval_inference_steps: int = 25  # DDIM steps (the `mini` preset's default)
    eval_guidance_scale: float = 5.0  # CFG weight (the `mini` preset's default)
    eval_samples_per_prompt: int = 4  # seeds per held-out prompt (90 prompts)
    eval_batch_size: int = 90  # prompts per pipeline call

    def validate(self, p: str = "mini") -> "MiniTrainConfig":
        for s in self.stages:
            if s not in STAGES:
                raise ConfigError(f"{p}.stages", list(self.stages),
                                  f"a list from {', '.join(STAGES)}")
        for k in ("num_threads", "checkpoint_every", "vae_steps", "vae_batch_size", "num_latents",
                  "unet_steps", "unet_batch_size", "classifier_steps", "classifier_batch_size",
                  "eval_inference_steps", "eval_samples_per_prompt", "eval_batch_size"):
            if getattr(self, k) <= 0:
                raise ConfigError(f"{p}.{k}", getattr(self, k), "a positive integer")
        for k in ("vae_lr", "unet_lr", "classifier_lr"):
            if not getattr(self, k) > 0:
                raise ConfigError(f"{p}.{k}", getattr(self, k), "a number > 0")
        if not 0 <= self.caption_dropout < 1:
            raise ConfigError(f"{p}.caption_dropout", self.caption_dropout, "a number in [0, 1)")
        if not 0 <= self.ema_decay < 1:
            raise ConfigError(f"{p}.ema_decay", self.ema_decay, "a number in [0, 1)")
        if self.vae_kl_weight < 0:
            raise ConfigError(f"{p}.vae_kl_weight", self.vae_kl_weight, "a number >= 0")
        return self

    @property
    def weights(self) -> Path:
        return Path(self.weights_dir) if self.weights_dir else WEIGHTS_DIR


def _warmup_cosine(optimizer, total_steps: int, warmup: int = 100, floor: float = 0.1):
    """LR multiplier: linear warm-up, then cosine from 1 to ``floor`` at ``total_steps``."""

    warmup = min(warmup, max(1, total_steps // 10))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return {"scheduler": torch.optim.lr_scheduler.LambdaLR(optimizer, factor), "interval": "step"}


# ----------------------------------------------------------------------------- Lightning modules
class VAEModule(L.LightningModule):
    """AutoencoderKL training: MSE(x, D(z)) + kl_weight * KL per latent element, z ~ q(z|x).

    MSE rather than L1: a shape decoded in the wrong colour costs quadratically, which pulls the
    few shape pixels into place faster than L1 does (the background dominates any pixel mean).
    """

    def __init__(self, vae, lr: float, kl_weight: float, total_steps: int):
        super().__init__()
        self.vae, self.lr, self.kl_weight, self.total_steps = vae, lr, kl_weight, total_steps

    def training_step(self, batch, batch_idx):
        x = batch["pixel_values"]  # (B, 3, 64, 64) in [-1, 1]
        posterior = self.vae.encode(x).latent_dist
        x_hat = self.vae.decode(posterior.sample()).sample
        rec = F.mse_loss(x_hat, x)
        kl = posterior.kl().mean() / posterior.mean[0].numel()  # kl() sums over (C, h, w)
        loss = rec + self.kl_weight * kl
        self.log_dict({"train/mse": rec, "train/kl": kl, "train/loss": loss}, prog_bar=True)
        return loss

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.vae.parameters(), lr=self.lr, weight_decay=0.0)
        return {"optimizer": opt, "lr_scheduler": _warmup_cosine(opt, self.total_steps)}


class LatentDataset(Dataset):
    """Cached posterior (mean, std) of training images and their captions; z is drawn per item."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, captions: list[str]):
        self.mean, self.std, self.captions = mean, std, captions

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, i: int):
        return self.mean[i], self.std[i], self.captions[i]


class DiffusionModule(L.LightningModule):
    """Text-conditioned latent diffusion (SD-v1.5 objective) with caption dropout and EMA.

    scaled latent z0 = scaling_factor * (mean + std * n); z_t = sqrt(a_t) z0 + sqrt(1 - a_t) eps;
    loss = || eps - U-Net(z_t, t, CLIP(caption)) ||^2.
    """

    def __init__(self, unet, text_encoder, tokenizer, scheduler, scaling_factor: float, lr: float,
                 caption_dropout: float, ema_decay: float, total_steps: int):
        super().__init__()
        self.unet, self.text_encoder, self.tokenizer = unet, text_encoder, tokenizer
        self.scheduler, self.scaling_factor = scheduler, scaling_factor
        self.lr, self.caption_dropout, self.total_steps = lr, caption_dropout, total_steps
        self.ema_decay = ema_decay
        # EMA copies are submodules, so they live in the checkpoint and survive a resume
        self.ema_unet = copy.deepcopy(unet).requires_grad_(False)
        self.ema_text_encoder = copy.deepcopy(text_encoder).requires_grad_(False)

    def training_step(self, batch, batch_idx):
        mean, std, captions = batch
        z0 = self.scaling_factor * (mean + std * torch.randn_like(std))  # (B, 4, 8, 8)
        drop = torch.rand(len(captions)) < self.caption_dropout
        captions = ["" if d else c for c, d in zip(captions, drop.tolist())]
        emb = encode_text(self.tokenizer, self.text_encoder, captions)  # (B, L, text_dim)
        noise = torch.randn_like(z0)
        num_t = self.scheduler.config.num_train_timesteps
        t = torch.randint(0, num_t, (len(z0),), device=z0.device)
        z_t = self.scheduler.add_noise(z0, noise, t)
        loss = F.mse_loss(self.unet(z_t, t, emb).sample, noise)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    @torch.no_grad()
    def on_train_batch_end(self, outputs, batch, batch_idx):
        step = self.global_step
        # short-horizon warm-up of the decay, so early EMA weights are not the random init
        decay = min(self.ema_decay, (1 + step) / (10 + step))
        for ema, live in ((self.ema_unet, self.unet), (self.ema_text_encoder, self.text_encoder)):
            for pe, pl in zip(ema.parameters(), live.parameters()):
                pe.lerp_(pl, 1 - decay)

    def configure_optimizers(self):
        params = list(self.unet.parameters()) + list(self.text_encoder.parameters())
        opt = torch.optim.AdamW(params, lr=self.lr, weight_decay=0.01)
        return {"optimizer": opt, "lr_scheduler": _warmup_cosine(opt, self.total_steps)}


def augment(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Blur and noise for the classifier: images (B, 3, H, W) in [0, 1] -> same shape.

    Decoded images are softer than rendered ones; the judge must not depend on sharpness.
    """

    out = images.clone()
    sigma = torch.rand(len(images), generator=generator) * 1.2
    for i, s in enumerate(sigma.tolist()):
        if s > 0.3:
            out[i] = gaussian_blur(out[i], kernel_size=[7, 7], sigma=[s, s])
    noise_std = torch.rand(len(images), 1, 1, 1, generator=generator) * 0.04
    return (out + noise_std * torch.randn(out.shape, generator=generator)).clamp(0, 1)


class ClassifierModule(L.LightningModule):
    """Cross-entropy on the five attribute heads of :class:`AttributeClassifier`."""

    def __init__(self, model: AttributeClassifier, lr: float, total_steps: int):
        super().__init__()
        self.model, self.lr, self.total_steps = model, lr, total_steps

    def training_step(self, batch, batch_idx):
        x = augment((batch["pixel_values"] + 1) / 2)  # [-1, 1] -> [0, 1], blurred and noised
        logits = self.model.classify(x)
        labels = batch["labels"]  # (B, 5) in ATTRIBUTES order
        loss = sum(F.cross_entropy(logits[a], labels[:, j]) for j, a in enumerate(ATTRIBUTES))
        acc = torch.stack([logits[a].argmax(-1) == labels[:, j]
                           for j, a in enumerate(ATTRIBUTES)]).all(0).float().mean()
        self.log_dict({"train/loss": loss, "train/acc_all": acc}, prog_bar=True)
        return loss

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.model.parameters(), lr=self.lr, weight_decay=1e-4)
        return {"optimizer": opt, "lr_scheduler": _warmup_cosine(opt, self.total_steps)}


# ----------------------------------------------------------------------------- stages
def _fit(module: L.LightningModule, loader: DataLoader, cfg: MiniTrainConfig, stage: str,
         max_steps: int) -> float:
    """Fit ``module`` for ``max_steps`` (resuming from ``<out_dir>/<stage>/last.ckpt``); seconds."""

    folder = Path(cfg.out_dir) / stage
    ckpt = ModelCheckpoint(dirpath=folder, filename="{step}", save_last=True, save_top_k=1,
                           every_n_train_steps=cfg.checkpoint_every)
    logger = CSVLogger(Path(cfg.out_dir) / "logs", name=stage, version=0)
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=max_steps, max_epochs=-1,
                        callbacks=[ckpt], logger=logger,
                        log_every_n_steps=10, enable_model_summary=False, default_root_dir=folder,
                        num_sanity_val_steps=0)
    last = folder / "last.ckpt"
    start = time.perf_counter()
    trainer.fit(module, loader, ckpt_path=str(last) if last.exists() else None)
    return time.perf_counter() - start


def _done(cfg: MiniTrainConfig, stage: str) -> dict | None:
    f = Path(cfg.out_dir) / stage / "done.json"
    return json.loads(f.read_text()) if f.exists() else None


def _mark_done(cfg: MiniTrainConfig, stage: str, info: dict) -> None:
    atomic_write_json(Path(cfg.out_dir) / stage / "done.json", info)


@torch.no_grad()
def encode_dataset(vae, cfg: MiniTrainConfig, batch_size: int = 256):
    """Posterior mean and std (N, 4, 8, 8) of ``num_latents`` training images, and captions."""
    means, stds, captions = [], [], []
    for start in range(0, cfg.num_latents, batch_size):
        n = min(batch_size, cfg.num_latents - start)
        images, caps, _ = make_images("train", n, seed=cfg.seed + 1, start=start)
        posterior = vae.encode(images.float() / 127.5 - 1).latent_dist
        means.append(posterior.mean)
        stds.append(posterior.std)
        captions += caps
    return torch.cat(means), torch.cat(stds), captions


def train_vae(cfg: MiniTrainConfig) -> dict:
    """Stage 1: the VAE, the latent cache and the scaling factor; returns timing and statistics."""

    folder = Path(cfg.out_dir) / "vae"
    if (info := _done(cfg, "vae")) is not None:
        return info
    L.seed_everything(cfg.seed, verbose=False)
    vae = build_vae(cfg.model)
    module = VAEModule(vae, cfg.vae_lr, cfg.vae_kl_weight, cfg.vae_steps)
    data = ShapesDataset(cfg.vae_steps * cfg.vae_batch_size, "train", seed=cfg.seed)
    seconds = _fit(module, DataLoader(data, batch_size=cfg.vae_batch_size), cfg, "vae",
                   cfg.vae_steps)
    vae = module.vae.eval()
    start = time.perf_counter()
    mean, std, captions = encode_dataset(vae, cfg)
    # SD's recipe: scale latents to unit variance for the diffusion model (0.18215 for SD-v1.5)
    z = mean + std * torch.randn(mean.shape, generator=torch.Generator().manual_seed(cfg.seed))
    scaling_factor = float(1 / z.std())
    vae.register_to_config(scaling_factor=scaling_factor)
    vae.save_pretrained(folder / "model")
    torch.save({"mean": mean, "std": std, "captions": captions}, folder / "latents.pt")
    info = {"seconds": seconds, "encode_seconds": time.perf_counter() - start,
            "scaling_factor": scaling_factor, "latent_std": float(z.std()),
            "posterior_std_mean": float(std.mean()), "steps": cfg.vae_steps}
    _mark_done(cfg, "vae", info)
    return info


def train_unet(cfg: MiniTrainConfig) -> dict:
    """Stage 3: U-Net + text encoder on the cached latents; saves the pipeline (EMA weights)."""


    if (info := _done(cfg, "unet")) is not None:
        return info
    folder = Path(cfg.out_dir) / "vae"
    vae = AutoencoderKL.from_pretrained(folder / "model")
    cache = torch.load(folder / "latents.pt")
    L.seed_everything(cfg.seed + 2, verbose=False)
    tokenizer = mini_tokenizer()
    text_encoder = build_text_encoder(cfg.model, tokenizer)
    unet = build_unet(cfg.model, latent_size=cache["mean"].shape[-1])
    scheduler = sd_ddim_scheduler()
    module = DiffusionModule(unet, text_encoder, tokenizer, scheduler, vae.config.scaling_factor,
                             cfg.unet_lr, cfg.caption_dropout, cfg.ema_decay, cfg.unet_steps)
    data = LatentDataset(cache["mean"], cache["std"], cache["captions"])
    loader = DataLoader(data, batch_size=cfg.unet_batch_size, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(cfg.seed))
    seconds = _fit(module, loader, cfg, "unet", cfg.unet_steps)
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=module.ema_text_encoder.eval(), tokenizer=tokenizer,
        unet=module.ema_unet.eval(), scheduler=scheduler, safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)
    # float16 storage halves the shipped size; loading casts back to generation.dtype
    pipe.to(torch.float16).save_pretrained(cfg.weights / "pipeline", safe_serialization=True)
    info = {"seconds": seconds, "steps": cfg.unet_steps,
            "unet_parameters": sum(p.numel() for p in unet.parameters()),
            "text_encoder_parameters": sum(p.numel() for p in text_encoder.parameters()),
            "vae_parameters": sum(p.numel() for p in vae.parameters())}
    _mark_done(cfg, "unet", info)
    return info


@torch.no_grad()
def classifier_accuracy(model: AttributeClassifier, split: str, num: int, seed: int) -> dict:
    """All-attribute and per-attribute accuracy on ``num`` fresh images of ``split``."""
    images, _, labels = make_images(split, num, seed=seed)
    pred = predict_attributes(images, model.eval())
    hits = torch.stack([pred[a] == labels[:, j] for j, a in enumerate(ATTRIBUTES)])  # (5, N)
    return {"all": float(hits.all(0).float().mean()),
            **{a: float(hits[j].float().mean()) for j, a in enumerate(ATTRIBUTES)}}


def train_classifier(cfg: MiniTrainConfig) -> dict:
    """Stage 2: the attribute classifier, trained on all combinations; saves safetensors + json."""
    if (info := _done(cfg, "classifier")) is not None:
        return info
    L.seed_everything(cfg.seed + 3, verbose=False)
    model = AttributeClassifier()
    module = ClassifierModule(model, cfg.classifier_lr, cfg.classifier_steps)
    data = ShapesDataset(cfg.classifier_steps * cfg.classifier_batch_size, "all", seed=cfg.seed + 3)
    seconds = _fit(module, DataLoader(data, batch_size=cfg.classifier_batch_size), cfg,
                   "classifier", cfg.classifier_steps)
    # fresh images: a seed the training stream never used
    acc = {s: classifier_accuracy(module.model, s, 1000, seed=cfg.seed + 100)
           for s in ("train", "heldout")}
    save_classifier(module.model, cfg.weights / "classifier.safetensors", metrics={"accuracy": acc})
    info = {"seconds": seconds, "steps": cfg.classifier_steps, "accuracy": acc}
    _mark_done(cfg, "classifier", info)
    return info


def load_folder(folder: str | Path):
    """A saved pipeline through the project's loader (the path ``model=<folder>`` takes)."""
    return load_pipeline(replace(MegConfig(), model=str(folder)), device=torch.device("cpu"))


@torch.no_grad()
def generate_reference_images(pipe, prompts: list[str], seed: int, steps: int, guidance: float,
                              batch_size: int = 90) -> torch.Tensor:
    """I_0 (N, 3, 64, 64) in [0, 1] for ``prompts``: the ES path (z, then D(z)), no channel.

    ``pipe`` is a pipeline or a diffusers folder; prompt i is drawn with ``seed_for(seed, i)``.
    """
    if isinstance(pipe, (str, Path)):
        pipe = load_folder(pipe)
    gen = GenerationConfig(height=64, width=64, num_inference_steps=steps, guidance_scale=guidance)
    images = []
    for i in range(0, len(prompts), batch_size):
        batch = prompts[i:i + batch_size]
        z = generate_latents(pipe, batch, [seed_for(seed, i + j) for j in range(len(batch))], gen)
        images.append(decode_latents(pipe.vae, z))  # (b, 3, 64, 64)
    return torch.cat(images)


def seed_dependence(images: torch.Tensor, prompts: list[str]) -> dict:
    """How much the noise seed decides: PSNR between images of one prompt drawn with other seeds.

    ``images`` (N, 3, H, W) in [0, 1] hold several seeds per prompt; each image is paired with the
    next image of the same prompt (N - distinct prompts pairs). In SD-v1.5 two seeds of one prompt
    give two different pictures (low PSNR); a model whose seed only jitters the picture gives a
    high one (docs/MINI.md).
    """

    last: dict[str, int] = {}
    pairs: list[tuple[int, int]] = []
    for i, p in enumerate(prompts):
        if p in last:
            pairs.append((last[p], i))
        last[p] = i
    if not pairs:
        raise ValueError("seed_dependence needs at least two images of one prompt")
    a, b = (torch.tensor(ix) for ix in zip(*pairs))
    values, _ = psnr_per_image(images[b], images[a])  # (pairs,), capped at 100 dB if identical
    return {"pairs": len(pairs), "prompts": len({prompts[i] for i in a.tolist()}),
            "psnr_mean": float(values.mean()), "psnr_median": float(values.median())}


def _scores(images: torch.Tensor, prompts: list[str], classifier) -> dict:
    hits = attribute_matches(images, prompts, classifier)
    return {"prompts": len(set(prompts)), "images": len(prompts),
            "semantic_accuracy": float(torch.stack(list(hits.values())).all(0).float().mean()),
            **{f"acc_{a}": float(h.float().mean()) for a, h in hits.items()}}


@torch.no_grad()
def evaluate(cfg: MiniTrainConfig) -> dict:
    """Stage 4: semantic accuracy of I_0 on the held-out prompts, and how much the seed decides.

    For scale, also on 90 training prompts, with wrong prompts (each held-out image judged
    against the next held-out prompt: should be near 0), of VAE reconstructions D(E(x)) of
    rendered held-out images (the ceiling the decoder sets for any generated latent), and the
    PSNR between held-out images of one prompt drawn with different seeds
    (:func:`seed_dependence`).
    """

    classifier = load_classifier(cfg.weights / "classifier.safetensors")
    pipe = load_folder(cfg.weights / "pipeline")
    start = time.perf_counter()
    out: dict = {}
    heldout = heldout_prompts() * cfg.eval_samples_per_prompt
    train = [a.caption for a in combinations("train")][::9] * cfg.eval_samples_per_prompt
    for name, prompts in (("heldout", heldout), ("train", train)):
        images = generate_reference_images(pipe, prompts, cfg.seed, cfg.eval_inference_steps,
                                           cfg.eval_guidance_scale, cfg.eval_batch_size)
        out[name] = _scores(images, prompts, classifier)
        if name == "heldout":
            # the judge is not lenient: the same images against another held-out prompt
            wrong = prompts[1:] + prompts[:1]
            out["heldout_wrong_prompts"] = _scores(images, wrong, classifier)
            if cfg.eval_samples_per_prompt > 1:
                out["seed_dependence_heldout"] = seed_dependence(images, prompts)
    images, captions, _ = make_images("heldout", 500, seed=cfg.seed + 200)
    z = pipe.vae.encode(images.float() / 127.5 - 1).latent_dist.mean  # (500, 4, 8, 8)
    recon = (pipe.vae.decode(z).sample / 2 + 0.5).clamp(0, 1)
    out["vae_reconstruction_heldout"] = _scores(recon, captions, classifier)
    out.update(inference_steps=cfg.eval_inference_steps, guidance_scale=cfg.eval_guidance_scale,
               seconds=time.perf_counter() - start)
    atomic_write_json(Path(cfg.out_dir) / "eval" / "done.json", out)
    return out


def main(cfg: Any = None) -> dict:
    """Run the configured stages (``cfg``: a MegConfig with the ``mini`` section, as ``meg
    train-mini`` composes it, or a :class:`MiniTrainConfig`); writes ``<weights>/metrics.json``
    with times and numbers."""

    cfg = getattr(cfg, "mini", cfg) or MiniTrainConfig()
    cfg.validate()
    torch.set_num_threads(cfg.num_threads)
    Path(cfg.out_dir).mkdir(parents=True, exist_ok=True)
    steps = {"vae": train_vae, "unet": train_unet, "classifier": train_classifier,
             "eval": evaluate}
    report: dict = {"config": asdict(cfg)}
    for stage in cfg.stages:
        print(f"[train-mini] stage {stage} ...", flush=True)
        report[stage] = steps[stage](cfg)
        print(f"[train-mini] stage {stage}: {json.dumps(report[stage])}", flush=True)
    if cfg.stages == list(STAGES):
        report["config"].pop("weights_dir")  # a machine-specific path
        report["config"].pop("out_dir")
        atomic_write_json(cfg.weights / "metrics.json", report)
    return report
