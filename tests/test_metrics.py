"""Metrics: PSNR (eqs. 6-7), FID (eq. 8) against an independent numpy/scipy reference, latent NMSE."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from meg_lightning.errors import MissingWeightsError
from meg_lightning.metrics import (
    PSNR_CAP_DB,
    PixelFeatures,
    extract_features,
    fid_torchmetrics,
    fid_with_ci,
    frechet_distance,
    latent_nmse_per_sample,
    make_feature_extractor,
    psnr_per_image,
)


def reference_fid(f1: np.ndarray, f2: np.ndarray) -> float:
    """Eq. (8) the textbook way: numpy means/covariances and scipy's matrix square root."""
    mu1, mu2 = f1.mean(0), f2.mean(0)
    c1, c2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    s = scipy.linalg.sqrtm(c1 @ c2)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(c1 + c2 - 2 * np.real(s)))


class RandomConvFeatures(nn.Module):
    """A fixed random conv net: the kind of extractor a user may inject into FID."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                                 nn.Flatten())
        self.num_features = 32

    def forward(self, x):
        return self.net(x)


def test_psnr_matches_definition_and_caps_identical_images():
    g = torch.Generator().manual_seed(0)
    i0 = torch.rand(4, 3, 8, 8, generator=g)
    ig = (i0 + 0.05 * torch.randn(4, 3, 8, 8, generator=g)).clamp(0, 1)
    psnr, capped = psnr_per_image(ig, i0)
    mse = ((ig - i0) ** 2).mean(dim=(1, 2, 3)).double()
    torch.testing.assert_close(psnr, 10 * torch.log10(1 / mse))
    assert not capped.any()
    psnr, capped = psnr_per_image(i0, i0)
    assert capped.all() and torch.all(psnr == PSNR_CAP_DB)


def test_psnr_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="same shape"):
        psnr_per_image(torch.rand(2, 3, 4, 4), torch.rand(2, 3, 4, 5))


def test_latent_nmse():
    z = torch.randn(3, 4, 2, 2)
    assert torch.all(latent_nmse_per_sample(z, z) == 0)
    torch.testing.assert_close(latent_nmse_per_sample(torch.zeros_like(z), z),
                               torch.ones(3, dtype=torch.float64))


def test_fid_injected_extractor_matches_scipy_reference():
    g = torch.Generator().manual_seed(1)
    real = torch.rand(40, 3, 16, 16, generator=g)
    fake = (real + 0.2 * torch.randn(40, 3, 16, 16, generator=g)).clamp(0, 1)
    ext = RandomConvFeatures()
    f_real = extract_features(ext, real).numpy()
    f_fake = extract_features(ext, fake).numpy()
    ref = reference_fid(f_real, f_fake)
    tm = fid_torchmetrics(real, fake, ext)
    ours = frechet_distance(torch.from_numpy(f_real), torch.from_numpy(f_fake))
    assert tm == pytest.approx(ref, rel=1e-3)
    assert ours == pytest.approx(ref, rel=1e-3)


def test_frechet_distance_rank_deficient_matches_reference():
    # fewer images than features (as with 64 images and 2048 Inception features)
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(10, 50, generator=g), torch.randn(12, 50, generator=g) + 0.3
    assert frechet_distance(a, b) == pytest.approx(reference_fid(a.numpy(), b.numpy()), rel=1e-3)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)


def test_fid_bootstrap_interval_and_count():
    g = torch.Generator().manual_seed(3)
    real = torch.randn(30, 8, generator=g)
    fake = real + 0.5 * torch.randn(30, 8, generator=g)
    r = fid_with_ci(real, fake, bootstrap=50, seed=0, features="test")
    assert r.n_images == 30 and r.bootstrap == 50
    assert 0 <= r.ci_low <= r.fid <= r.ci_high and r.se > 0
    assert r.ci_high - r.fid == pytest.approx(1.959964 * r.se, rel=1e-5)
    d = r.as_dict()
    assert d["fid"] == r.fid and d["fid_n_images"] == 30 and d["fid_features"] == "test"
    assert fid_with_ci(real, fake, bootstrap=50, seed=0) == fid_with_ci(real, fake, bootstrap=50,
                                                                        seed=0)


def test_pixel_features_named_and_resolution_independent():
    ext = PixelFeatures(size=4)
    assert ext.name == "pixel-FID" and "ncept" not in ext.name
    assert ext(torch.rand(2, 3, 32, 32)).shape == (2, 48)
    assert ext(torch.rand(2, 3, 8, 8)).shape == (2, 48)


def test_missing_inception_weights_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("MEG_INCEPTION_WEIGHTS", str(tmp_path / "absent.pth"))
    with pytest.raises(MissingWeightsError, match="eval.fid_features=pixels"):
        make_feature_extractor("inception")
    with pytest.warns(UserWarning, match="pixel-FID"):
        assert isinstance(make_feature_extractor("auto"), PixelFeatures)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Matrix is singular")  # 4 images, 2048 features: rank 3
def test_inception_path_with_local_weights(monkeypatch, tmp_path):
    """The Inception extractor end to end, offline: random weights saved where a user would put
    the real ones (MEG_INCEPTION_WEIGHTS), then FID through torchmetrics."""
    import torch_fidelity.feature_extractor_inceptionv3 as fe

    from meg_lightning.metrics import InceptionFeatures

    orig = fe.FeatureExtractorInceptionV3.load_state_dict
    monkeypatch.setattr(fe, "load_state_dict_from_url", lambda *a, **k: {})
    monkeypatch.setattr(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda *a, **k: None)
    torch.manual_seed(0)
    net = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    sd = {k: v for k, v in nn.Module.state_dict(net).items()}
    monkeypatch.setattr(fe.FeatureExtractorInceptionV3, "load_state_dict", orig)
    path = tmp_path / "weights-inception.pth"
    torch.save(sd, path)
    monkeypatch.setenv("MEG_INCEPTION_WEIGHTS", str(path))
    ext = make_feature_extractor("auto")
    assert isinstance(ext, InceptionFeatures) and ext.num_features == 2048
    g = torch.Generator().manual_seed(0)
    real, fake = torch.rand(4, 3, 32, 32, generator=g), torch.rand(4, 3, 32, 32, generator=g)
    f = extract_features(ext, real)
    assert f.shape == (4, 2048) and torch.isfinite(f).all()
    f_fake = extract_features(ext, fake)
    ref = reference_fid(f.numpy(), f_fake.numpy())
    assert fid_torchmetrics(real, fake, ext) == pytest.approx(ref, rel=1e-3, abs=1e-6)
    assert frechet_distance(f, f_fake) == pytest.approx(ref, rel=1e-3, abs=1e-6)
