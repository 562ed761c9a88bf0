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

from meg_lightning.channel import Channel
from meg_lightning.codec.components import build_codec, check_latents, code_length
from meg_lightning.config import ChannelConfig, CodecConfig
from meg_lightning.config import data_id as config_data_id
from meg_lightning.errors import ConfigError, UserError
from meg_lightning.metrics.image import latent_nmse_per_sample

MODES = ("train", "eval")


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
        fc, arch, hidden: see :class:`~meg_lightning.config.CodecConfig`; k = round(fc |z|).
        lr, weight_decay: Adam settings (Table I: lr 1e-3).
        val_snrs_db: SNRs at which validation logs ``val/mse@..``, ``val/nmse@..``, ``val/psnr@..``.
        channel: a :class:`ChannelConfig` as a dict (kept in the checkpoint's hyper-parameters).
        seed: base seed of the explicit training / validation noise generators.

    ``val/loss`` is the latent MSE at ``channel["snr_db"]`` (the training SNR), the checkpoint
    monitor.
    """

    def __init__(self, latent_shape: Sequence[int], fc: float = 0.5, arch: str = "paper",
                 hidden: Optional[int] = None, lr: float = 1e-3, weight_decay: float = 0.0,
                 val_snrs_db: Sequence[float] = (0.0, 10.0, 20.0),
                 channel: Optional[dict[str, Any]] = None, seed: int = 0,
                 data_id: Optional[str] = None):
        super().__init__()
        latent_shape = [int(s) for s in latent_shape]
        channel = asdict(ChannelConfig()) if channel is None else dict(channel)
        val_snrs_db = [float(s) for s in val_snrs_db]
        self.save_hyperparameters()
        self.latent_shape = tuple(latent_shape)
        self.numel = math.prod(self.latent_shape)
        self.k = code_length(fc, self.numel)
        codec_cfg = CodecConfig(fc=fc, arch=arch, hidden=hidden, lr=lr, weight_decay=weight_decay,
                                val_snrs_db=list(val_snrs_db))
        self.encoder, self.decoder = build_codec(self.latent_shape, codec_cfg)
        channel_cfg = ChannelConfig(**channel)
        channel_cfg.validate("channel")
        self.channel_cfg = channel_cfg
        self.channel = Channel.from_config(channel_cfg)

    @classmethod
    def from_config(cls, cfg: Any, latent_shape: Sequence[int]) -> "CodecModule":
        """Build from a :class:`~meg_lightning.config.MegConfig` (codec, channel and seed)."""
        c = cfg.codec
        return cls(latent_shape, fc=c.fc, arch=c.arch, hidden=c.hidden, lr=c.lr,
                   weight_decay=c.weight_decay, val_snrs_db=list(c.val_snrs_db),
                   channel=asdict(cfg.channel), seed=cfg.seed, data_id=config_data_id(cfg))

    # -- the three public steps --------------------------------------------------------------
    def encode(self, z: torch.Tensor) -> torch.Tensor:
        """x = C_w(z) (eq. 2): (B, C, h, w) -> (B, k), before power normalisation."""
        return self.encoder(z)

    def decode(self, x_hat: torch.Tensor) -> torch.Tensor:
        """z_hat = C_psi^{-1}(x_hat): (B, k) -> (B, C, h, w)."""
        return self.decoder(x_hat)

    def forward(self, z: torch.Tensor, snr_db: Any = None, mode: str = "eval",
                generator: Optional[torch.Generator] = None,
                power: Optional[torch.Tensor] = None) -> dict[str, torch.Tensor]:
        """z -> {z_hat, x, x_hat}. ``mode`` "train" samples the training SNR (channel config),
        "eval" uses ``snr_db`` (float or (B,) tensor; None = ``channel.snr_db``). ``power``
        (B, num_blocks) relative block powers (eq. 29) go to the channel as they are.

        To send the seed over another link, swap ``self.channel`` or compose ``encode``, your
        channel and ``decode``."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        check_latents(z, self.latent_shape)
        x = self.encode(z)  # (B, k)
        out = self.channel(x, mode=mode, snr_db=snr_db, power=power, generator=generator)
        x_hat = out["x_hat"]  # (B, k), de-normalised to x's scale
        return {"z_hat": self.decode(x_hat), "x": x, "x_hat": x_hat}

    # -- Lightning hooks -----------------------------------------------------------------------
    def _generator(self, device: torch.device, *parts: Any) -> torch.Generator:
        return torch.Generator(device=device).manual_seed(_seed_of(self.hparams.seed, *parts))

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        z = batch["z"]  # (B, C, h, w)
        g = self._generator(z.device, "train", self.global_step, self.global_rank)
        out = self(z, mode="train", generator=g)
        loss = F.mse_loss(out["z_hat"], z)  # eq. 27 (mean over entries)
        self.log("train/loss", loss, prog_bar=True, batch_size=z.shape[0])
        return loss

    def _val_snrs(self) -> list[float]:
        snrs = [float(s) for s in self.hparams.val_snrs_db]
        train_snr = float(self.channel_cfg.snr_db)
        return snrs if train_snr in snrs else snrs + [train_snr]

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        z = batch["z"]
        bs = z.shape[0]
        for snr in self._val_snrs():
            g = self._generator(z.device, "val", snr, batch_idx, self.global_rank)
            z_hat = self(z, snr_db=snr, mode="eval", generator=g)["z_hat"]
            mse = F.mse_loss(z_hat, z)
            key = snr_key(snr)
            self.log(f"val/mse@{key}", mse, batch_size=bs, sync_dist=True)
            nmse = latent_nmse_per_sample(z_hat, z).mean().float()
            self.log(f"val/nmse@{key}", nmse, batch_size=bs, sync_dist=True)
            self.log(f"val/psnr@{key}", latent_psnr(z, z_hat).mean(), batch_size=bs, sync_dist=True)
            if snr == float(self.channel_cfg.snr_db):
                self.log("val/loss", mse, prog_bar=True, batch_size=bs, sync_dist=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Adam (Table I), fused where the device supports it (the unfused CPU update is ~10x
        slower for the paper-size codec)."""
        kw = dict(lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        try:
            return torch.optim.Adam(self.parameters(), fused=True, **kw)
        except (RuntimeError, ValueError):
            return torch.optim.Adam(self.parameters(), **kw)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Lightning does not save the global RNG, which draws the DataLoader shuffle order.
        checkpoint["meg_rng_state"] = torch.get_rng_state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # only when a Trainer resumes: a plain load_from_checkpoint must not reseed the caller
        if self._trainer is not None and "meg_rng_state" in checkpoint:
            torch.set_rng_state(checkpoint["meg_rng_state"])


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
    if "latent_shape" not in hp or "fc" not in hp:
        raise UserError(f"codec checkpoint {str(path)!r} has no codec hyper-parameters: "
                        "expected a .ckpt written by `meg train-codec`")
    trained = tuple(hp["latent_shape"])
    if latent_shape is not None and tuple(int(s) for s in latent_shape) != trained:
        raise ConfigError("latent_shape", tuple(latent_shape),
                          f"{trained}, the latent shape of checkpoint {str(path)!r}")
    if fc is not None and not math.isclose(float(fc), float(hp["fc"]), abs_tol=1e-9):
        raise ConfigError("codec.fc", fc, f"{hp['fc']}, the compression rate of checkpoint "
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
