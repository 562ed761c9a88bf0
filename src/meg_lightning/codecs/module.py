"""The Lightning module that trains C_w and C_psi^{-1} through the channel (Algorithm 2, eq. 27).

::

    z --C_w--> x --Channel (power-normalise, y = h x + n, equalise, de-normalise)--> x_hat
      --C_psi^{-1}--> z_hat            loss L = mean ||z - z_hat||^2 (eq. 27, per latent entry)

Randomness is explicit so that resuming from ``last.ckpt`` reproduces an uninterrupted run:
training noise comes from a generator seeded by (seed, global step, rank), validation noise from
one seeded by (seed, SNR, batch index, rank), and the global RNG state (which draws the DataLoader
shuffle) is saved in and restored from the checkpoint.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional, Sequence

import lightning as L
import torch
from torch.nn import functional as F

from meg_lightning.channels import CHANNELS
from meg_lightning.channels import build as build_channel
from meg_lightning.codecs.adaptive import snr_features
from meg_lightning.codecs.base import ARCHS, build_codec, check_latents, code_length, settings_for
from meg_lightning.codecs.klt import LinearCode
from meg_lightning.config import ChannelConfig, CodecConfig
from meg_lightning.config import data_id as config_data_id
from meg_lightning.errors import ConfigError, UserError
from meg_lightning.metrics.image import latent_nmse_per_sample
from meg_lightning.registry import has_settings, settings_of

MODES = ("train", "eval")
#: SNR grid (dB, 1 dB steps) of the ``linear_ratio`` reference
REF_GRID_DB = (-30.0, 50.0)


def snr_key(snr_db: float) -> str:
    """Log-key suffix for an SNR: 10.0 -> '10dB', -5.0 -> '-5dB', 2.5 -> '2.5dB'."""
    return f"{float(snr_db):g}dB"


def _seed_of(*parts: Any) -> int:
    """A stable 63-bit seed from any printable parts (independent of PYTHONHASHSEED)."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def latent_psnr(z: torch.Tensor, z_hat: torch.Tensor) -> torch.Tensor:
    """Per-sample latent PSNR in dB, 10 log10(range(z)^2 / MSE), range = max(z) - min(z); (B,)."""
    zf = z.flatten(1)
    peak = zf.amax(1) - zf.amin(1)
    mse = (zf - z_hat.flatten(1)).pow(2).mean(1).clamp_min(1e-20)
    return 10 * torch.log10(peak.pow(2).clamp_min(1e-20) / mse)


class CodecModule(L.LightningModule):
    """MEG compression codec: C_w -> channel -> C_psi^{-1}, trained on the latent MSE (eq. 27).

    Args:
        latent_shape: (C, h, w) of the latents z (U-Net outputs, before 1/scaling_factor).
        codec: the ``codec`` config section as a dict (:func:`codec_settings`): the rate fc
            (k = round(fc |z|)), the architecture ``arch`` and its own settings under its name,
            and the training settings (lr, loss, schedule, ...: :class:`~meg_lightning.config.
            CodecConfig`).
        channel: the ``channel`` config section as a dict: the link trained through.
        seed: base seed of the explicit training / validation noise generators.
        data_id: fingerprint of the latents trained on (:func:`meg_lightning.config.data_id`).

    Both dicts are kept in the checkpoint's hyper-parameters, so a checkpoint rebuilds its codec.
    ``val/loss`` (the checkpoint monitor) is ``codec.val_loss``: the latent MSE at the channel's
    ``snr_db``, its mean over the validation SNRs, or its ratio to the linear code's.
    """

    def __init__(self, latent_shape: Sequence[int], codec: Optional[dict[str, Any]] = None,
                 channel: Optional[dict[str, Any]] = None, seed: int = 0,
                 data_id: Optional[str] = None):
        super().__init__()
        latent_shape = [int(s) for s in latent_shape]
        codec = codec_settings(codec or {})
        channel = channel_settings(channel or {})
        self.save_hyperparameters({"latent_shape": latent_shape, "codec": codec,
                                   "channel": channel, "seed": seed, "data_id": data_id})
        self.latent_shape = tuple(latent_shape)
        self.numel = math.prod(self.latent_shape)
        common = {k: v for k, v in codec.items() if k != codec["arch"]}
        self.codec_cfg = CodecConfig(**common)
        self.codec_cfg.validate("codec")
        self.k = code_length(self.codec_cfg.fc, self.numel)
        self.arch = ARCHS[self.codec_cfg.arch]
        self.arch_cfg = settings_for(self.codec_cfg.arch, codec.get(self.codec_cfg.arch))
        self.encoder, self.decoder = build_codec(self.latent_shape, self.codec_cfg.fc,
                                                 self.codec_cfg.arch, self.arch_cfg)
        self.channel = build_channel(channel)
        loss, val_loss = self.codec_cfg.loss, self.codec_cfg.val_loss
        if self.arch.adaptive:
            a = self.arch_cfg
            if a.dense_aux > 0 and not self.encoder.dense:
                raise ConfigError("codec.adaptive.dense_aux", a.dense_aux,
                                  "0 without the dense path (codec.adaptive.skip auto / dense, "
                                  "|z| small enough)")
            if a.freeze_dense:
                if not (self.encoder.dense and a.linear_init):
                    raise ConfigError("codec.adaptive.freeze_dense", a.freeze_dense,
                                      "false unless the dense path exists (codec.adaptive.skip "
                                      "auto / dense) and codec.adaptive.linear_init=true")
                # the KLT maps and the LMMSE priors stay what init_linear fits; the per-SNR gains
                # train
                for p in (*self.encoder.linear.parameters(), *self.decoder.linear.parameters(),
                          self.decoder.log_var):
                    p.requires_grad_(False)
            # set once the dense path has been fitted to data (saved: a resumed run does not refit)
            self.register_buffer("linear_initialised", torch.zeros((), dtype=torch.bool))
        if "linear_ratio" in (loss, val_loss):
            # the optimal linear code's closed-form MSE on a 1 dB grid (ln), fitted on the training
            # latents at the start of training (saved: a resumed run does not refit)
            self.register_buffer("ref_snr_db", torch.arange(REF_GRID_DB[0], REF_GRID_DB[1] + 0.5))
            self.register_buffer("ref_log_mse", torch.zeros_like(self.ref_snr_db))
            self.register_buffer("reference_fitted", torch.zeros((), dtype=torch.bool))

    @classmethod
    def from_config(cls, cfg: Any, latent_shape: Sequence[int]) -> "CodecModule":
        """Build from a :class:`~meg_lightning.config.MegConfig` (codec, channel and seed)."""
        return cls(latent_shape, codec=asdict(cfg.codec), channel=asdict(cfg.channel),
                   seed=cfg.seed, data_id=config_data_id(cfg))

    # -- the three public steps --------------------------------------------------------------
    @property
    def adaptive(self) -> bool:
        """True when encoder and decoder take the channel state (``arch="adaptive"``)."""
        return bool(self.arch.adaptive)

    def _snr(self, snr_db: Any, like: torch.Tensor) -> torch.Tensor:
        """(B,) SNR in dB: ``snr_db`` (number or tensor), None = the channel's ``snr_db``."""
        return self.channel.draw_snr(like.shape[0], mode="eval", snr_db=snr_db, like=like)

    def encode(self, z: torch.Tensor, snr_db: Any = None) -> torch.Tensor:
        """x = C_w(z) (eq. 2): (B, C, h, w) -> (B, k), before power normalisation. ``snr_db``
        (number or (B,) tensor; None = ``channel.snr_db``) is used by adaptive codecs only."""
        if not self.adaptive:
            return self.encoder(z)
        return self.encoder(z, self._snr(snr_db, z))

    def decode(self, x_hat: torch.Tensor, snr_db: Any = None,
               csi_db: Optional[torch.Tensor] = None) -> torch.Tensor:
        """z_hat = C_psi^{-1}(x_hat): (B, k) -> (B, C, h, w). Adaptive codecs also take the
        nominal SNR (as :meth:`encode`) and ``csi_db`` (B, num_blocks), each fading block's
        effective SNR after equalisation (:func:`effective_snr_db`; None = ``snr_db`` on one block,
        AWGN)."""
        if not self.adaptive:
            return self.decoder(x_hat)
        return self._decode_parts(x_hat, snr_db, csi_db)[0]

    def _decode_parts(self, x_hat: torch.Tensor, snr_db: Any,
                      csi_db: Optional[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Adaptive codecs: (z_hat, the dense path's estimate alone), as :meth:`decode`."""
        snr = self._snr(snr_db, x_hat)
        csi = snr.unsqueeze(1) if csi_db is None else csi_db.to(snr)
        if csi.ndim != 2 or csi.shape[0] != x_hat.shape[0]:
            raise ValueError(f"csi_db must have shape ({x_hat.shape[0]}, num_blocks), "
                             f"got {tuple(csi.shape)}")
        e = self.encoder.embed(snr_features(snr).reshape(-1, 1))
        log_gain = self.encoder.log_gain(e) if self.encoder.dense else None
        return self.decoder.decode_parts(x_hat, snr, csi, log_gain=log_gain)

    def forward(self, z: torch.Tensor, snr_db: Any = None, mode: str = "eval",
                generator: Optional[torch.Generator] = None,
                power: Optional[torch.Tensor] = None,
                h: Optional[torch.Tensor] = None) -> dict[str, torch.Tensor]:
        """z -> {z_hat, x, x_hat, snr_db (B,), csi_db (B, blocks): each block's effective SNR;
        adaptive codecs also z_lin, the dense path's estimate alone}.
        ``mode`` "train" samples the training SNR (channel config),
        "eval" uses ``snr_db`` (float or (B,) tensor; None = ``channel.snr_db``). ``power``
        (B, num_blocks) relative block powers (eq. 29) go to the channel as they are; ``h``
        (B, num_blocks) complex pre-drawn fading gains (``rayleigh`` only).

        To send the seed over another link, swap ``self.channel`` or compose ``encode``, your
        channel and ``decode``."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        check_latents(z, self.latent_shape)
        # the SNR is drawn before encoding (an adaptive encoder needs it); the channel draws it
        # first as well, so the random sequence is the same as when the channel draws it
        snr = self.channel.draw_snr(z.shape[0], mode=mode, snr_db=snr_db, generator=generator,
                                    like=z)  # (B,)
        x = self.encode(z, snr)  # (B, k)
        out = self.channel(x, mode=mode, snr_db=snr, power=power, h=h, generator=generator)
        x_hat = out["x_hat"]  # (B, k), de-normalised to x's scale
        csi = out["csi_db"]  # (B, segments)
        res = {"x": x, "x_hat": x_hat, "snr_db": snr, "csi_db": csi}
        if self.adaptive:
            res["z_hat"], res["z_lin"] = self._decode_parts(x_hat, snr, csi)
        else:
            res["z_hat"] = self.decode(x_hat)
        return res

    # -- Lightning hooks -----------------------------------------------------------------------
    def _generator(self, device: torch.device, *parts: Any) -> torch.Generator:
        return torch.Generator(device=device).manual_seed(_seed_of(self.hparams["seed"], *parts))

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        z = batch["z"]  # (B, C, h, w)
        g = self._generator(z.device, "train", self.global_step, self.global_rank)
        out = self(z, mode="train", generator=g, h=self._train_fading(z, g))
        # linear_ratio: each sample's MSE relative to what the optimal linear code gets at its
        # SNR; without it the low-SNR samples (MSE ~100x larger) decide every gradient
        ref = (self.sample_reference(out["csi_db"]) if self.codec_cfg.loss == "linear_ratio"
               else None)
        loss = self._loss(out["z_hat"], z, ref)
        self.log("train/loss", loss, prog_bar=True, batch_size=z.shape[0])
        aux = float(self.arch_cfg.dense_aux) if self.arch.adaptive else 0.0
        if aux > 0:  # the dense path exists (checked at construction)
            # the dense path alone is asked to stay a good linear code: left free, it drifts
            # away from the optimal one (3.6x its MSE at 20 dB) and the decoder's conv path must
            # undo that, which it does less well on captions it never saw
            dense = self._loss(out["z_lin"], z, ref)
            self.log("train/dense_loss", dense, batch_size=z.shape[0])
            loss = loss + aux * dense
        return loss

    @staticmethod
    def _loss(z_hat: torch.Tensor, z: torch.Tensor, ref: Optional[torch.Tensor]) -> torch.Tensor:
        """The training loss: the latent MSE (eq. 27, mean over entries) when ``ref`` is None, else
        the mean over samples of each one's MSE / ref (B,)."""
        if ref is None:
            return F.mse_loss(z_hat, z)
        return ((z_hat - z).pow(2).flatten(1).mean(1) / ref).mean()

    def _needs_reference(self) -> bool:
        return hasattr(self, "reference_fitted") and not bool(self.reference_fitted)

    def _needs_linear_init(self) -> bool:
        return (self.adaptive and self.arch_cfg.linear_init and self.encoder.dense
                and not bool(self.linear_initialised))

    def on_fit_start(self) -> None:
        """Fits what depends on the training latents, once (a resumed run keeps it): adaptive
        codecs with ``linear_init`` start the dense path at their KLT (the optimal linear code at
        high SNR); ``linear_ratio`` losses get the linear code's MSE per SNR."""
        if self.global_step > 0 or not (self._needs_linear_init() or self._needs_reference()):
            return
        z = torch.cat([b["z"] for b in self.trainer.datamodule.train_dataloader()]).to(self.device)
        if self._needs_linear_init():
            self.init_linear(z)
        if self._needs_reference():
            self.fit_reference(z)
        if self.trainer.world_size > 1:
            # each rank saw its own shard of the data: every rank takes rank 0's fit (DDP syncs
            # gradients only, and its start-up broadcast has already happened)
            for t in list(self.parameters()) + list(self.buffers()):
                t.data.copy_(self.trainer.strategy.broadcast(t.data, src=0))

    @torch.no_grad()
    def fit_reference(self, z: torch.Tensor) -> None:
        """The ``linear_ratio`` reference: ln of :meth:`LinearCode.expected_mse` of the linear code
        fitted on latents z (N, C, h, w), on the 1 dB grid ``ref_snr_db``."""
        code = LinearCode.fit(z.detach().float().cpu(), self.codec_cfg.fc)
        mse = [max(code.expected_mse(float(s)), 1e-12) for s in self.ref_snr_db.tolist()]
        self.ref_log_mse.copy_(torch.tensor(mse, dtype=torch.float64).log())
        self.reference_fitted.fill_(True)

    def sample_reference(self, csi_db: torch.Tensor) -> torch.Tensor:
        """The ``linear_ratio`` denominator of each sample (B,): the linear code's MSE at each
        fading block's effective SNR (B, blocks), averaged over the blocks. On AWGN that is its
        MSE at the SNR; under fading a deep fade raises it, so that the fading samples do not
        outweigh the AWGN ones."""
        B, nb = csi_db.shape
        return self.reference_mse(csi_db.reshape(-1)).reshape(B, nb).mean(1)

    def reference_mse(self, snr_db: torch.Tensor) -> torch.Tensor:
        """The linear code's AWGN MSE at each SNR (B,) (log-linear between grid points; clamped
        to the grid's ends)."""
        grid = self.ref_snr_db
        s = snr_db.to(grid).clamp(float(grid[0]), float(grid[-1]))
        i = (s - grid[0]).floor().long().clamp(0, grid.numel() - 2)  # 1 dB steps
        t = s - grid[i]
        log_mse = self.ref_log_mse[i] * (1 - t) + self.ref_log_mse[i + 1] * t
        return log_mse.exp().to(snr_db.dtype)

    @torch.no_grad()
    def init_linear(self, z: torch.Tensor) -> None:
        """Dense path := KLT of latents z (N, C, h, w), gains ~ lambda^(-1/4) (the high-SNR
        MMSE power loading), LMMSE priors lambda_i; see :mod:`meg_lightning.codecs.adaptive`."""
        code = LinearCode.fit(z.detach().float().cpu(), self.codec_cfg.fc)
        lam = torch.as_tensor(code.eigvals[: code.eigvecs.shape[1]].copy(), dtype=torch.float32)
        log_gain = -0.25 * lam.clamp_min(1e-12).log()
        self.encoder.init_linear(code.mean, code.eigvecs, log_gain)
        self.decoder.init_linear(code.mean, code.eigvecs, lam)
        self.linear_initialised.fill_(True)

    def _train_fading(self, z: torch.Tensor, g: torch.Generator) -> Optional[torch.Tensor]:
        """Training on a fading channel with ``awgn_fraction`` > 0: that fraction of the samples
        sees h = 1 (AWGN) and the rest the channel's gains, so one model serves both; else None
        (the channel draws h itself)."""
        frac = float(self.codec_cfg.awgn_fraction)
        if frac <= 0 or not self.channel.fading:
            return None
        B = z.shape[0]
        h = self.channel.draw_gains(B, -(-self.k // 2), g, z)  # (B, groups)
        flat = torch.rand(B, 1, generator=g, device=z.device) < frac
        return torch.where(flat, torch.ones_like(h), h)

    def _val_snrs(self) -> list[float]:
        snrs = [float(s) for s in self.codec_cfg.val_snrs_db]
        train_snr = float(self.channel.snr_db)
        return snrs if train_snr in snrs else snrs + [train_snr]

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        z = batch["z"]
        bs = z.shape[0]
        losses, ratios = [], []
        for snr in self._val_snrs():
            g = self._generator(z.device, "val", snr, batch_idx, self.global_rank)
            z_hat = self(z, snr_db=snr, mode="eval", generator=g)["z_hat"]
            mse = F.mse_loss(z_hat, z)
            key = snr_key(snr)
            self.log(f"val/mse@{key}", mse, batch_size=bs, sync_dist=True)
            nmse = latent_nmse_per_sample(z_hat, z).mean().float()
            self.log(f"val/nmse@{key}", nmse, batch_size=bs, sync_dist=True)
            self.log(f"val/psnr@{key}", latent_psnr(z, z_hat).mean(), batch_size=bs, sync_dist=True)
            if self.codec_cfg.val_loss == "train_snr" and snr == float(self.channel.snr_db):
                self.log("val/loss", mse, prog_bar=True, batch_size=bs, sync_dist=True)
            losses.append(mse)
            if self.codec_cfg.val_loss == "linear_ratio":
                ratios.append(mse / self.reference_mse(torch.tensor([snr], device=z.device))[0])
        if self.codec_cfg.val_loss == "linear_ratio":
            # the monitor of a codec meant to beat the linear code at every SNR of the range
            self.log("val/loss", torch.stack(ratios).mean(), prog_bar=True, batch_size=bs,
                     sync_dist=True)
        if self.codec_cfg.val_loss == "mean":
            # the early-stopping / best-checkpoint monitor of a codec that serves many SNRs
            self.log("val/loss", torch.stack(losses).mean(), prog_bar=True, batch_size=bs,
                     sync_dist=True)

    def configure_optimizers(self) -> Any:
        """Adam (Table I), fused where the device supports it (the unfused CPU update is ~10x
        slower for the paper-size codec), with ``schedule``: none (Table I) | cosine (per epoch,
        to lr / 100 at the Trainer's max_epochs) | plateau (halve after 3 epochs without a better
        val/loss)."""
        kw = dict(lr=self.codec_cfg.lr, weight_decay=self.codec_cfg.weight_decay)
        try:
            opt = torch.optim.Adam(self.parameters(), fused=True, **kw)
        except (RuntimeError, ValueError):
            opt = torch.optim.Adam(self.parameters(), **kw)
        schedule = self.codec_cfg.schedule
        if schedule == "none":
            return opt
        if schedule == "cosine":
            epochs = max(1, int(self.trainer.max_epochs or 1)) if self._trainer else 1
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs,
                                                               eta_min=self.codec_cfg.lr / 100)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=3)
        return {"optimizer": opt,
                "lr_scheduler": {"scheduler": sched, "monitor": "val/loss", "interval": "epoch"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Lightning does not save the global RNG, which draws the DataLoader shuffle order.
        checkpoint["meg_rng_state"] = torch.get_rng_state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # only when a Trainer resumes: a plain load_from_checkpoint must not reseed the caller
        if self._trainer is not None and "meg_rng_state" in checkpoint:
            torch.set_rng_state(checkpoint["meg_rng_state"])
        if self._trainer is not None and self.codec_cfg.schedule == "cosine":
            retarget_cosine(checkpoint, max(1, int(self.trainer.max_epochs or 1)))


def retarget_cosine(checkpoint: dict[str, Any], epochs: int) -> None:
    """Point a checkpoint's cosine schedules at ``epochs`` (the resuming Trainer's max_epochs).

    A run resumed with a larger ``trainer.max_epochs`` (say 1, then 3) would otherwise keep the
    saved horizon, because Lightning restores the scheduler's state, T_max included, after
    ``configure_optimizers``: its learning rate would sit at the floor and then rise again
    (torch's cosine is periodic). Instead the schedule and the optimiser's learning rates become
    those an uninterrupted run to ``epochs`` has after the same number of epochs, by replaying that
    schedule step by step (torch's recursive update, so the values are the same to the bit)."""
    pairs = zip(checkpoint.get("lr_schedulers") or [], checkpoint.get("optimizer_states") or [])
    for sched, opt in pairs:
        if "T_max" not in sched or sched["T_max"] == epochs:
            continue
        dummy = torch.optim.SGD([{"params": [torch.zeros(1, requires_grad=True)], "lr": lr}
                                 for lr in sched["base_lrs"]])
        replay = torch.optim.lr_scheduler.CosineAnnealingLR(dummy, T_max=epochs,
                                                            eta_min=sched["eta_min"])
        for _ in range(int(sched["last_epoch"])):
            dummy.step()  # no gradients: a no-op that keeps the scheduler's order check quiet
            replay.step()
        sched.update(T_max=epochs, _last_lr=list(replay.get_last_lr()))
        for group, lr in zip(opt["param_groups"], replay.get_last_lr()):
            group["lr"] = lr


def codec_settings(codec: dict[str, Any]) -> dict[str, Any]:
    """The part of a ``codec`` config section (a dict) that makes a codec: the training settings
    of :class:`~meg_lightning.config.CodecConfig` (not where to resume from or when to stop) and
    the selected architecture's own settings, complete with defaults."""
    out = asdict(CodecConfig())
    out.update({k: v for k, v in codec.items() if k in out})
    for key in ("checkpoint", "early_stop_patience"):  # the run's, not the codec's
        out.pop(key)
    arch = out["arch"]
    out[arch] = asdict(settings_for(arch, codec.get(arch)))
    return out


def channel_settings(channel: dict[str, Any]) -> dict[str, Any]:
    """The part of a ``channel`` config section (a dict) that makes the training link: the shared
    settings of :class:`~meg_lightning.config.ChannelConfig` and the selected model's own
    (``channel.<kind>.*``, complete with defaults) when it has any."""
    out = asdict(ChannelConfig())
    out.update({k: v for k, v in channel.items() if k in out})
    kind = out["kind"]
    if kind in CHANNELS and has_settings(CHANNELS[kind]):
        own = channel.get(kind)
        own = own if isinstance(own, dict) else asdict(own) if own is not None else {}
        out[kind] = asdict(settings_of(CHANNELS[kind])(**own))
    return out


#: flat hyper-parameters of checkpoints written before the architectures were registered
_FLAT_ARCH_KEYS = {"paper": ("hidden",), "mlp": ("hidden",),
                   "adaptive": ("width", "blocks", "skip", "linear_init", "gate", "dense_aux",
                                "freeze_dense")}


def upgrade_hparams(hp: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's hyper-parameters in the current form (``latent_shape``, ``codec``,
    ``channel``, ``seed``, ``data_id``); older checkpoints kept every codec setting flat."""
    if "codec" in hp:
        return hp
    arch = hp.get("arch", "paper")
    own = {k: hp[k] for k in _FLAT_ARCH_KEYS.get(arch, ()) if k in hp}
    flat = {k: v for k, v in hp.items()
            if k not in ("latent_shape", "channel", "seed", "data_id")
            and k not in {x for keys in _FLAT_ARCH_KEYS.values() for x in keys}}
    return {"latent_shape": hp["latent_shape"], "codec": codec_settings({**flat, arch: own}),
            "channel": hp.get("channel"), "seed": hp.get("seed", 0),
            "data_id": hp.get("data_id")}


def read_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint dict, memory-mapped (tensors are read only when used); UserError if not one."""
    try:
        # mmap: checking the hyper-parameters of a 2 GiB paper checkpoint reads only what is used.
        return torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise UserError(f"codec checkpoint {str(path)!r} could not be read "
                        f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}): "
                        "expected a .ckpt written by `meg train-codec`") from None


def load_codec(path: str | Path, latent_shape: Optional[Sequence[int]] = None,
               fc: Optional[float] = None, map_location: Any = "cpu",
               data_id: Optional[str] = None) -> CodecModule:
    """A trained :class:`CodecModule` in eval mode from a checkpoint written by `meg train-codec`.

    Raises :class:`UserError` for a missing / unreadable file and :class:`ConfigError` when the
    checkpoint was trained for another latent shape or compression rate fc than asked, and
    :class:`UserError` when ``data_id`` is given (:func:`meg_lightning.config.data_id`) and the
    checkpoint was trained on other latents (checkpoints from before the id was recorded pass).
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"codec checkpoint {str(path)!r} not found: expected a .ckpt file "
                        "(train one with `meg train-codec codec.fc=<fc>` or set codec.checkpoint)")
    ckpt = read_checkpoint(path)
    hp = dict(ckpt.get("hyper_parameters") or {})
    if "latent_shape" not in hp or not ("fc" in hp or "fc" in (hp.get("codec") or {})):
        raise UserError(f"codec checkpoint {str(path)!r} has no codec hyper-parameters: "
                        "expected a .ckpt written by `meg train-codec`")
    hp = upgrade_hparams(hp)
    trained = tuple(hp["latent_shape"])
    if latent_shape is not None and tuple(int(s) for s in latent_shape) != trained:
        raise ConfigError("latent_shape", tuple(latent_shape),
                          f"{trained}, the latent shape of checkpoint {str(path)!r}")
    rate = hp["codec"]["fc"]
    if fc is not None and not math.isclose(float(fc), float(rate), abs_tol=1e-9):
        raise ConfigError("codec.fc", fc, f"{rate}, the compression rate of checkpoint "
                          f"{str(path)!r} (train one with `meg train-codec codec.fc={fc}`)")
    if data_id is not None and hp.get("data_id") not in (None, data_id):
        raise UserError(f"codec checkpoint {str(path)!r} was trained on other latents (data id "
                        f"{hp['data_id']}, this run's is {data_id}: another model, prompts, "
                        "generation settings or split): train one for these settings with "
                        "`meg train-codec` in another out_dir, or name it explicitly in "
                        "eval.codec_checkpoints / codec.checkpoint")
    model = CodecModule(**hp)
    model.load_state_dict(ckpt["state_dict"])
    return model.to(map_location).eval()
