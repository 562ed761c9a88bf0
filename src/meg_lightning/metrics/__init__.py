"""Image and latent quality metrics (paper Sec. II-C): PSNR (eqs. 6-7), FID (eq. 8), latent NMSE;
LPIPS against I_0 and CLIP score against the prompt (real weights only, else absent)."""

from meg_lightning.metrics.clip_score import (
    ClipScorer,
    clip_model_source,
    load_clip_score,
    make_clip_score,
)
from meg_lightning.metrics.fid import (
    FIDResult,
    InceptionFeatures,
    PixelFeatures,
    extract_features,
    feature_name,
    fid_torchmetrics,
    fid_with_ci,
    frechet_distance,
    inception_weights_path,
    make_feature_extractor,
)
from meg_lightning.metrics.image import (
    PSNR_CAP_DB,
    latent_mse_per_sample,
    latent_nmse_per_sample,
    mse_per_image,
    psnr_per_image,
)
from meg_lightning.metrics.lpips import LPIPS, load_lpips, lpips_weights_path, make_lpips

__all__ = [
    "LPIPS", "ClipScorer", "clip_model_source", "load_clip_score", "load_lpips",
    "lpips_weights_path", "make_clip_score", "make_lpips",
    "FIDResult", "InceptionFeatures", "PixelFeatures", "PSNR_CAP_DB", "extract_features",
    "feature_name", "fid_torchmetrics", "fid_with_ci", "frechet_distance",
    "inception_weights_path", "latent_mse_per_sample", "latent_nmse_per_sample", "make_feature_extractor",
    "mse_per_image", "psnr_per_image",
]
