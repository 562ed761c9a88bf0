"""Pixel metrics between the generated image I_g and the perfect image I_0 (paper Sec. II-C1).

Images are float tensors in [0, 1] of shape (B, 3, H, W), so i_max = 1 in eq. (7). MSE (eq. 6) is
averaged over rows, columns *and* colour channels of each image; PSNR is returned per image.

A perfect reconstruction (MSE = 0, e.g. over a noiseless channel) has infinite PSNR. Averaging
infinities is meaningless, so every PSNR is capped at :data:`PSNR_CAP_DB` and the number of capped
images is reported beside the mean (column ``psnr_capped`` in the results).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics.functional.image import peak_signal_noise_ratio

PSNR_CAP_DB = 100.0  # reported in place of +inf PSNR (MSE = 0); far above 8-bit quantisation (~59 dB)


def _check_images(name: str, x: Tensor) -> None:
    if x.ndim != 4:
        raise ValueError(f"{name} must be images (B, C, H, W), got shape {tuple(x.shape)}")


def mse_per_image(i_g: Tensor, i_0: Tensor) -> Tensor:
    """Eq. (6): mean squared pixel error of each image, (B,)."""
    _check_images("i_g", i_g)
    _check_images("i_0", i_0)
    if i_g.shape != i_0.shape:
        raise ValueError(f"i_g and i_0 must have the same shape, got {tuple(i_g.shape)} and "
                         f"{tuple(i_0.shape)}")
    return (i_g.double() - i_0.double()).square().mean(dim=(1, 2, 3))


def psnr_per_image(i_g: Tensor, i_0: Tensor, *, data_range: float = 1.0,
                   cap_db: float = PSNR_CAP_DB) -> tuple[Tensor, Tensor]:
    """Eq. (7) per image with i_max = ``data_range``: returns (psnr_db (B,), capped (B,) bool).

    torchmetrics computes the PSNR (``reduction="none"`` over the image dimensions); values that
    are infinite or above ``cap_db`` are replaced by ``cap_db`` and flagged in ``capped``.
    """
    mse_per_image(i_g, i_0)  # shape checks
    psnr = peak_signal_noise_ratio(i_g.double(), i_0.double(), data_range=data_range,
                                   reduction="none", dim=(1, 2, 3))
    capped = ~torch.isfinite(psnr) | (psnr > cap_db)
    return torch.where(capped, torch.full_like(psnr, cap_db), psnr), capped


def latent_nmse_per_sample(z_hat: Tensor, z: Tensor) -> Tensor:
    """Normalised latent error ||z_hat - z||^2 / ||z||^2 per sample, (B,)."""
    if z_hat.shape != z.shape:
        raise ValueError(f"z_hat and z must have the same shape, got {tuple(z_hat.shape)} and "
                         f"{tuple(z.shape)}")
    err = (z_hat.double() - z.double()).flatten(1).square().sum(1)
    return err / z.double().flatten(1).square().sum(1).clamp_min(1e-30)


def latent_mse_per_sample(z_hat: Tensor, z: Tensor) -> Tensor:
    """Mean squared latent error per sample, (B,) (the PPO ``latent_mse`` reward's quantity)."""
    if z_hat.shape != z.shape:
        raise ValueError(f"z_hat and z must have the same shape, got {tuple(z_hat.shape)} and "
                         f"{tuple(z.shape)}")
    return (z_hat.double() - z.double()).flatten(1).square().mean(1)
