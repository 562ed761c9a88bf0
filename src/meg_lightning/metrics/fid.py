"""Fréchet distance between the perfect images I_0 and the generated images I_g (paper eq. 8).

FID is a distance between two *sets* of images: each set is summarised by the mean mu and the
covariance C of a feature vector per image, and

    FID = ||mu_g - mu_0||^2 + Tr(C_g + C_0 - 2 (C_g C_0)^{1/2}).                  (8)

Feature extractors (``eval.fid_features``):

- ``inception``: Inception-v3 pool features (2048-d), the paper's FID, through torchmetrics /
  torch-fidelity. torch-fidelity downloads the weights from GitHub on first use; offline we look
  for them first (:func:`inception_weights_path`) and raise :class:`MissingWeightsError` with the
  way to get them instead of hanging on a download.
- ``pixels``: average-pooled RGB pixels (``PixelFeatures``). Not Inception FID: it is reported as
  ``pixel-FID`` and its numbers are not comparable with the paper's.
- ``mini``: the penultimate features (128-d) of the shipped attribute classifier of the ``mini``
  model (:mod:`meg_lightning.mini.classifier`), a feature space trained on that domain. Reported
  as ``mini-FID``; not Inception FID either.
- ``auto``: ``mini`` when the model is ``mini`` (Inception was never trained on its shapes);
  otherwise Inception if its weights are present, else pixels (with a warning).

Every FID is reported with the number of images it was computed over and, optionally, a
bootstrap confidence interval (:func:`fid_with_ci`).
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.image.fid import FrechetInceptionDistance, NoTrainInceptionV3

from meg_lightning.errors import ConfigError, MissingWeightsError
from meg_lightning.runtime import torch_threads

# torch-fidelity's weight file (torch_fidelity.feature_extractor_inceptionv3.URL_INCEPTION_V3),
# cached by torch.hub under <torch.hub.get_dir()>/checkpoints/.
INCEPTION_WEIGHTS_URL = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
                         "weights-inception-2015-12-05-6726825d.pth")
INCEPTION_WEIGHTS_FILE = INCEPTION_WEIGHTS_URL.rsplit("/", 1)[1]
WEIGHTS_ENV = "MEG_INCEPTION_WEIGHTS"  # an explicit path to the weight file wins over the cache


def inception_weights_path() -> Optional[Path]:
    """The local Inception-v3 FID weight file, or None when it would have to be downloaded."""
    if os.environ.get(WEIGHTS_ENV):
        p = Path(os.environ[WEIGHTS_ENV])
        return p if p.is_file() else None
    p = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_WEIGHTS_FILE
    return p if p.is_file() else None


def _missing_inception_message() -> str:
    cache = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_WEIGHTS_FILE
    return (f"Inception-v3 FID weights not found (looked at ${WEIGHTS_ENV} and {cache}); "
            f"download {INCEPTION_WEIGHTS_URL} to {cache} or set {WEIGHTS_ENV}=<file>, "
            f"or use eval.fid_features=pixels (pixel-FID, not comparable with the paper)")


class InceptionFeatures(nn.Module):
    """Inception-v3 2048-d pool features (torchmetrics' torch-fidelity wrapper) of [0, 1] images."""

    name = "inception"
    num_features = 2048

    def __init__(self, weights_path: Optional[str | Path] = None):
        super().__init__()
        path = Path(weights_path) if weights_path else inception_weights_path()
        if path is None or not path.is_file():
            raise MissingWeightsError(_missing_inception_message())
        self.net = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"],
                                      feature_extractor_weights_path=str(path))

    def forward(self, images: Tensor) -> Tensor:  # (B, 3, H, W) in [0, 1] -> (B, 2048)
        # The network expects uint8 pixels (it resizes to 299x299 itself).
        return self.net((images.clamp(0, 1) * 255).round().to(torch.uint8))


class PixelFeatures(nn.Module):
    """Offline stand-in features: RGB average-pooled to ``size`` x ``size`` and flattened.

    Resolution independent (3 * size^2 features for any H, W). A Fréchet distance on these features
    measures low-frequency colour statistics; it is *pixel-FID*, never to be reported as FID.
    """

    name = "pixel-FID"

    def __init__(self, size: int = 16):
        super().__init__()
        if size <= 0:
            raise ValueError(f"size must be a positive integer, got {size!r}")
        self.size = size
        self.num_features = 3 * size * size

    def forward(self, images: Tensor) -> Tensor:  # (B, 3, H, W) in [0, 1] -> (B, 3 * size^2)
        return F.adaptive_avg_pool2d(images.float(), self.size).flatten(1)


def make_feature_extractor(kind: str = "auto",
                           domain: Optional[Callable[[], nn.Module]] = None) -> nn.Module:
    """The FID feature extractor for ``eval.fid_features`` (auto | inception | pixels | mini).

    ``domain`` builds the model's own feature extractor when it has one (injected by the caller:
    the ``mini`` model's classifier, :func:`meg_lightning.mini.classifier.domain_features`);
    ``mini`` asks for it and ``auto`` prefers it, then Inception when its weights are present,
    then pixel features (with a warning)."""
    if kind == "pixels":
        return PixelFeatures()
    if kind == "inception":
        return InceptionFeatures()
    if kind == "mini" or (kind == "auto" and domain is not None):
        if domain is None:
            raise ConfigError("eval.fid_features", kind, "auto, inception or pixels for a model "
                              "without its own feature extractor (mini has one)")
        return domain()
    if kind == "auto":
        if inception_weights_path() is not None:
            return InceptionFeatures()
        warnings.warn(_missing_inception_message() + "; falling back to pixel-FID", stacklevel=2)
        return PixelFeatures()
    raise ConfigError("eval.fid_features", kind, "one of auto, inception, pixels, mini")


def feature_name(extractor: nn.Module) -> str:
    """How FIDs from ``extractor`` are labelled in results ("inception", "pixel-FID", "mini-FID",
    or the class name)."""
    return getattr(extractor, "name", type(extractor).__name__)


@torch.no_grad()
def extract_features(extractor: nn.Module, images: Tensor, batch_size: int = 64) -> Tensor:
    """Features (N, d) in float64 of images (N, 3, H, W) in [0, 1], computed in batches."""
    device = next(extractor.parameters(), torch.empty(0)).device
    out = [extractor(images[i:i + batch_size].to(device)).double().cpu()
           for i in range(0, len(images), batch_size)]
    return torch.cat(out).flatten(1)


def frechet_distance(real: Tensor, fake: Tensor) -> float:
    """Eq. (8) from feature matrices real (n, d) and fake (m, d) with unbiased covariances.

    The matrix square root is never formed. With centred features A (n, d), B (m, d),
    C_0 = A^T A / (n-1) and C_g = B^T B / (m-1), the non-zero eigenvalues of C_0 C_g are the
    squared singular values of A B^T / sqrt((n-1)(m-1)), hence

        Tr (C_0 C_g)^{1/2} = ||A B^T||_* / sqrt((n-1)(m-1)),

    exact for any d, and an (n x m) SVD instead of a (d x d) eigen-decomposition: cheap enough to
    bootstrap with d = 2048 and free of the spurious imaginary parts of ``sqrtm``.
    """
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"features must be (n, d) and (m, d), got {tuple(real.shape)} and "
                         f"{tuple(fake.shape)}")
    n, m = len(real), len(fake)
    if n < 2 or m < 2:
        raise ValueError(f"FID needs at least 2 images per set, got {n} real and {m} generated")
    with torch_threads(1):  # (n x m) work: threads only add waiting (see runtime.torch_threads)
        real, fake = real.double(), fake.double()
        a, b = real - real.mean(0), fake - fake.mean(0)
        mean_term = (real.mean(0) - fake.mean(0)).square().sum()
        trace_term = a.square().sum() / (n - 1) + b.square().sum() / (m - 1)
        cross = torch.linalg.svdvals(a @ b.T).sum() / math.sqrt((n - 1) * (m - 1))
        return float((mean_term + trace_term - 2 * cross).clamp_min(0.0))


def fid_torchmetrics(real_images: Tensor, fake_images: Tensor, extractor: nn.Module,
                     batch_size: int = 64) -> float:
    """Eq. (8) with torchmetrics' ``FrechetInceptionDistance`` and an injected extractor.

    ``extractor`` maps [0, 1] images to (B, d) and has a ``num_features`` attribute (which keeps
    torchmetrics from probing it with a dummy image).
    """
    metric = FrechetInceptionDistance(feature=extractor, normalize=True)
    for i in range(0, len(real_images), batch_size):
        metric.update(real_images[i:i + batch_size], real=True)
    for i in range(0, len(fake_images), batch_size):
        metric.update(fake_images[i:i + batch_size], real=False)
    return float(metric.compute())


@dataclass
class FIDResult:
    """An FID with the set sizes it was computed over and its bootstrap interval."""

    fid: float
    n_images: int  # images per set (real and generated sets are paired, so equal)
    se: float = float("nan")  # bootstrap standard error (nan when bootstrap = 0)
    ci_low: float = float("nan")  # normal interval fid -/+ z se, clipped at 0
    ci_high: float = float("nan")
    ci_level: float = 0.95
    bootstrap: int = 0  # resamples used for the interval
    features: str = ""  # extractor label: "inception" (the paper's FID), "pixel-FID", "mini-FID"

    def as_dict(self, prefix: str = "fid") -> dict:
        d = asdict(self)
        return {prefix: d.pop("fid"), **{f"{prefix}_{k}": v for k, v in d.items()}}


def fid_with_ci(real: Tensor, fake: Tensor, *, bootstrap: int = 200, level: float = 0.95,
                seed: int = 0, features: str = "") -> FIDResult:
    """FID (eq. 8) of paired feature sets real[i] <-> fake[i] with a bootstrap interval.

    The pairs (I_0 of prompt i, I_g of prompt i) are resampled jointly, with replacement, so the
    interval reflects which prompts happened to be in the test set. The interval is the normal one
    centred on the full-set FID, FID -/+ z_{(1+level)/2} se, with se the standard deviation of the
    resampled FIDs, clipped at 0. Why not percentiles: a resample holds only ~63% distinct images,
    and FID's finite-sample bias (it grows like d/n) shifts every resampled FID, so with tens of
    images the percentile interval, and the basic one that reflects it, often miss the estimate
    altogether. The spread of the resampled values is the usable part.
    """
    if len(real) != len(fake):
        raise ValueError(f"paired sets must have the same size, got {len(real)} and {len(fake)}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    n = len(real)
    res = FIDResult(fid=frechet_distance(real, fake), n_images=n, ci_level=level,
                    bootstrap=bootstrap, features=features)
    if bootstrap > 1:
        g = torch.Generator().manual_seed(seed)
        stats = torch.tensor([frechet_distance(real[idx], fake[idx])
                              for idx in (torch.randint(0, n, (n,), generator=g)
                                          for _ in range(bootstrap))], dtype=torch.float64)
        z = float(torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor((1 + level) / 2)))
        res.se = float(stats.std())
        res.ci_low = max(0.0, res.fid - z * res.se)
        res.ci_high = res.fid + z * res.se
    return res
