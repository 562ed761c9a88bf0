"""The latents' second-order theory: the optimal linear analog code and the Gaussian OPTA bound.

Codec training uses both (the adaptive codec starts its dense path at the KLT; the
``linear_ratio`` loss divides by the linear code's closed-form MSE); the ``linear`` scheme sends
the code (:mod:`meg_lightning.schemes.linear`) and the sweep reports the bound.

- :class:`LinearCode`: the optimal linear analog code for a Gaussian source over AWGN under an
  average power constraint (Lee & Petersen 1976): KLT of z truncated to k components, power
  loading p_i = (a sqrt(lambda_i) - sigma^2)^+ with a set by sum_i p_i = k, LMMSE receiver.
  :meth:`LinearCode.expected_mse` gives its closed-form MSE.
- :func:`opta_mse`: the Gaussian OPTA bound, the smallest latent MSE any scheme using k real
  AWGN channel uses can reach for a Gaussian source with the latents' covariance (reverse
  water-filling at R = (k/|z|) * 0.5 log2(1 + SNR) bits per latent entry).

All MSEs are per latent entry, mean over the |z| entries of (z - z_hat)^2, as in eq. 27.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import nn

from meg_lightning.codecs.base import check_code, check_latents, code_length
from meg_lightning.errors import ConfigError


def _noise_var(snr_db: Any) -> np.ndarray:
    return 10.0 ** (-np.asarray(snr_db, dtype=np.float64) / 10.0)  # per real symbol (unit power)


def opta_mse(eigenvalues: Any, rate_ratio: float, snr_db: Any) -> Any:
    """Gaussian OPTA: min latent MSE for source spectrum ``eigenvalues`` over an AWGN channel.

    With rho = k/|z| real channel uses per latent entry, the channel carries
    R = rho * 0.5 log2(1 + SNR) bits per entry (capacity of a real AWGN use at unit power). The
    Gaussian rate-distortion function by reverse water-filling gives the distortion
    D_i = min(theta, lambda_i) with sum_i 0.5 log2(lambda_i / D_i) = |z| R; returns
    mean_i D_i over all |z| entries. ``eigenvalues`` must hold all |z| of them (zeros allowed).
    Returns a float for a scalar ``snr_db``, else an array of its shape.
    """
    lam = np.sort(np.clip(np.asarray(eigenvalues, dtype=np.float64).ravel(), 0, None))[::-1]
    if not 0 < rate_ratio <= 1 or not math.isfinite(rate_ratio):
        raise ConfigError("rate_ratio", rate_ratio, "k/|z| in (0, 1]")
    snr = np.asarray(snr_db, dtype=np.float64)
    out = np.array([_reverse_water_fill(lam, rate_ratio * 0.5 * math.log2(1 + 10 ** (s / 10)))
                    for s in snr.ravel()]).reshape(snr.shape)
    return float(out) if out.ndim == 0 else out


def _reverse_water_fill(lam: np.ndarray, rate: float) -> float:
    """Mean distortion of a Gaussian vector with variances ``lam`` (sorted descending) at ``rate``
    bits per component (total n * rate bits)."""
    n = lam.size
    total_bits = n * rate
    pos = lam[lam > 0]
    if total_bits <= 0 or pos.size == 0:
        return float(lam.mean())
    log_lam = np.log2(pos)
    csum = np.cumsum(log_lam)
    # The m largest variances are coded: log2 theta = (sum_{i<=m} log2 lambda_i - 2 n R) / m,
    # valid when lambda_{m+1} <= theta < lambda_m; take the largest such m.
    for m in range(pos.size, 0, -1):
        log_theta = (csum[m - 1] - 2 * total_bits) / m
        if log_theta < log_lam[m - 1] and (m == pos.size or log_theta >= log_lam[m]):
            theta = 2.0 ** log_theta
            return float((m * theta + pos[m:].sum()) / n)
    return float(lam.mean())


class LinearCode(nn.Module):
    """Optimal linear analog code on latents: KLT, MMSE power loading, LMMSE receiver.

    Encoder: c = U_k^T (z - mu) (the k leading principal components, variances lambda_i),
    x_i = g_i c_i with g_i^2 lambda_i = p_i, p_i = (a sqrt(lambda_i) - sigma^2)^+ and
    sum_i p_i = k, i.e. unit average power E[mean_i x_i^2] = 1 (the constraint the closed form
    assumes; the channel is used with ``normalize=False``). Receiver: ĉ_i = g_i lambda_i /
    (g_i^2 lambda_i + s_i^2) x̂_i with s_i^2 the noise variance on symbol i after equalisation
    (sigma^2 on AWGN, sigma^2 / |h_b|^2 after zero-forcing on block fading); z_hat = mu + U_k ĉ.

    Closed-form MSE on AWGN (:meth:`expected_mse`), per latent entry:
    (1/|z|) [sigma^2 sum_{i active} sqrt(lambda_i) / a + sum_{i inactive} lambda_i].
    """

    def __init__(self, mean: torch.Tensor, eigvecs: torch.Tensor, eigvals: torch.Tensor,
                 latent_shape: Sequence[int], k: int, total_var: float,
                 channel: Optional[nn.Module] = None):
        super().__init__()
        self.latent_shape, self.numel = check_code(latent_shape, k)
        self.k = k
        self.register_buffer("mean", mean.reshape(-1).float())  # (|z|,)
        self.register_buffer("eigvecs", eigvecs[:, :k].float())  # (|z|, r), r <= k
        self.eigvals = np.clip(eigvals.double().cpu().numpy(), 0, None)  # all known, descending
        self.total_var = float(total_var)  # trace of the covariance = sum of all eigenvalues
        self.channel = channel

    @classmethod
    def fit(cls, z: torch.Tensor, fc: float, channel: Optional[nn.Module] = None) -> "LinearCode":
        """Fit mean and KLT on training latents z (N, C, h, w) for rate ``fc``.

        Uses the thin SVD of the centred data (N x |z|), so |z| = 16384 with a few hundred
        latents costs O(N^2 |z|), not the O(|z|^3) of an eigendecomposition.
        """
        if z.ndim != 4 or z.shape[0] < 2:
            raise ConfigError("z.shape", tuple(z.shape),
                              "(N, C, h, w) with N >= 2 training latents")
        latent_shape = tuple(z.shape[1:])
        zf = z.reshape(z.shape[0], -1).double()  # (N, |z|)
        mean = zf.mean(0)
        zc = zf - mean
        _, s, vh = torch.linalg.svd(zc, full_matrices=False)  # s descending, vh (r, |z|)
        eigvals = s.pow(2) / (zf.shape[0] - 1)
        k = code_length(fc, zf.shape[1])
        return cls(mean, vh.T.contiguous(), eigvals, latent_shape, k,
                   total_var=float(zc.pow(2).sum() / (zf.shape[0] - 1)), channel=channel)

    @classmethod
    def from_moments(cls, mean: torch.Tensor, cov: torch.Tensor, latent_shape: Sequence[int],
                     fc: float, channel: Optional[nn.Module] = None) -> "LinearCode":
        """The code for a known mean (|z|,) and covariance (|z|, |z|)."""
        evals, evecs = torch.linalg.eigh(cov.double())  # ascending
        evals, evecs = evals.flip(0), evecs.flip(1)
        n = cov.shape[0]
        return cls(mean.double(), evecs, evals, latent_shape, code_length(fc, n),
                   total_var=float(torch.trace(cov.double())), channel=channel)

    # -- closed forms ----------------------------------------------------------------------------
    def power_loading(self, snr_db: float) -> np.ndarray:
        """Per-component powers p_i (length r = number of kept components), sum = k."""
        lam = self.eigvals[: self.eigvecs.shape[1]]
        s2 = float(_noise_var(snr_db))
        p = np.zeros_like(lam)
        root = np.sqrt(lam)
        csum = np.cumsum(root)
        for m in range(lam.size, 0, -1):  # largest active set whose weakest member gets p > 0
            if root[m - 1] <= 0:
                continue
            a = (self.k + m * s2) / csum[m - 1]
            if a * root[m - 1] > s2:
                p[:m] = a * root[:m] - s2
                break
        return p

    def expected_mse(self, snr_db: float) -> float:
        """Closed-form latent MSE per entry on AWGN at ``snr_db`` (true covariance = fitted one)."""
        lam = self.eigvals[: self.eigvecs.shape[1]]
        s2 = float(_noise_var(snr_db))
        p = self.power_loading(snr_db)
        kept = float(np.sum(lam * s2 / (p + s2)))  # lambda_i s2 / (p_i + s2) per component
        return (kept + self.total_var - float(lam.sum())) / self.numel

    def _gains(self, snr_db: float, device: torch.device) -> torch.Tensor:
        lam = self.eigvals[: self.eigvecs.shape[1]]
        p = self.power_loading(snr_db)
        g = np.where(lam > 0, np.sqrt(p / np.where(lam > 0, lam, 1.0)), 0.0)
        return torch.as_tensor(g, dtype=torch.float32, device=device)  # (r,)

    # -- the scheme --------------------------------------------------------------------------------
    def encode(self, z: torch.Tensor, snr_db: float) -> torch.Tensor:
        """x (B, k): loaded principal components, zero-padded when fewer than k are known."""
        check_latents(z, self.latent_shape)
        c = (z.flatten(1) - self.mean) @ self.eigvecs  # (B, r)
        x = c * self._gains(snr_db, z.device)
        return nn.functional.pad(x, (0, self.k - x.shape[1]))  # (B, k)

    def decode(self, x_hat: torch.Tensor, snr_db: float,
               noise_var: Optional[torch.Tensor] = None) -> torch.Tensor:
        """LMMSE estimate z_hat (B, C, h, w); ``noise_var`` (B, k) per-symbol, default AWGN."""
        r = self.eigvecs.shape[1]
        lam = torch.as_tensor(self.eigvals[:r], dtype=torch.float32, device=x_hat.device)
        g = self._gains(snr_db, x_hat.device)
        s2 = (torch.full_like(x_hat[:, :r], float(_noise_var(snr_db))) if noise_var is None
              else noise_var[:, :r])
        c_hat = x_hat[:, :r] * g * lam / (g.pow(2) * lam + s2)  # (B, r)
        z_hat = self.mean + c_hat @ self.eigvecs.T  # (B, |z|)
        return z_hat.reshape(-1, *self.latent_shape)

    def forward(self, z: torch.Tensor, snr_db: float = 20.0,
                generator: Optional[torch.Generator] = None) -> dict[str, torch.Tensor]:
        if self.channel is None:
            raise ConfigError("LinearCode.channel", None,
                              "a Channel (normalize=False) to send over")
        if getattr(self.channel, "equalizer", "zf") != "zf":
            raise ConfigError("channel.equalizer", self.channel.equalizer,
                              "zf for the linear code (its LMMSE receiver follows zero-forcing)")
        x = self.encode(z, snr_db)
        out = self.channel(x, mode="eval", snr_db=float(snr_db), generator=generator)
        noise_var = effective_noise_var(out, x.shape)
        z_hat = self.decode(out["x_hat"], snr_db, noise_var)
        return {"z_hat": z_hat, "x": x, "x_hat": out["x_hat"]}


def effective_noise_var(out: dict[str, torch.Tensor], shape: torch.Size) -> torch.Tensor:
    """Per-symbol noise variance on x_hat (B, k) after zero-forcing with perfect CSI:
    sigma^2 scale^2 / (p |h|^2) from a channel's output, each segment (one gain, one power)
    covering 2 L consecutive real symbols."""
    B, k = shape[0], shape[1]
    nv = out["noise_var"].reshape(B, 1).to(torch.float32)  # (B, 1) per real symbol
    scale = out.get("scale")
    if scale is not None:  # a normalising channel de-normalises the noise with the signal
        nv = nv * scale.reshape(B, 1).to(torch.float32).pow(2)
    gain = out["h"].abs().pow(2).to(torch.float32).reshape(B, -1)  # (B, groups)
    power = out.get("power")
    if power is not None:
        power = power.to(torch.float32).reshape(B, -1)  # (B, num_blocks)
        S = gain.shape[1] * power.shape[1] // math.gcd(gain.shape[1], power.shape[1])
        gain = (gain.repeat_interleave(S // gain.shape[1], dim=1)
                * power.repeat_interleave(S // power.shape[1], dim=1))  # (B, segments)
    per_block = 2 * (-(-k // 2) // gain.shape[1])  # real symbols per segment (odd k padded)
    gain = gain.repeat_interleave(per_block, dim=1)[:, :k]  # (B, k)
    return nv / gain.clamp_min(1e-12)
