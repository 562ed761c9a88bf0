"""Closed forms for the seed link (paper eqs. 3, 28-29), used by the PPO env, baselines and tests.

Conventions (the same as :class:`meg_lightning.channels.Channel`):

- ``sigma2`` is the noise variance per REAL symbol, ``sigma2 = 10^(-SNR_dB/10)``; the transmitted
  real symbols have unit mean power, so SNR_dB is the SNR per real (and per complex) symbol.
- ``p`` is the transmit power of a block RELATIVE to the unit normalised power (amplitude
  ``sqrt(p)``, see eq. 29), ``g = |h|^2`` is the fading power gain, ``g ~ Exp(1)`` for Rayleigh.
- The per-block received SNR is ``p * g / sigma2``.
- MSEs are per real symbol for a unit-power (Gaussian) symbol after equalisation with perfect CSI.

Every function takes python floats, numpy arrays or torch tensors and returns the same kind
(torch in -> torch out, differentiable where the formula is), so the batched PPO env can call it on
tensors and the evaluation code on numpy arrays.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

__all__ = [
    "noise_var_from_snr_db",
    "snr_db_from_noise_var",
    "received_snr",
    "mse_zf",
    "mse_mmse",
    "mse_none",
    "mse",
    "scaled_exp1",
    "ergodic_mse_zf",
    "ergodic_mse_mmse",
    "ergodic_mse",
    "avg_snr_db",
    "relative_power",
]

_EULER_GAMMA = 0.5772156649015329
_SERIES_TERMS = 30  # E1 power series on (0, 1]: the 30th term is < 1e-33
_CF_ITERS = 80  # continued fraction on [1, inf): converged to float64 eps for x >= 1


def _xp(*xs: Any):
    """torch if any argument is a tensor, else numpy (so the same formula serves both)."""
    return torch if any(isinstance(x, torch.Tensor) for x in xs) else np


def _as_array(x: Any, xp) -> Any:
    """``x`` (number, array or tensor, real or complex) as an array of ``xp``; tensors pass through."""
    if xp is torch:
        if isinstance(x, torch.Tensor):
            return x
        return torch.as_tensor(x, dtype=torch.complex128 if np.iscomplexobj(x) else torch.float64)
    return np.asarray(x, dtype=np.complex128 if np.iscomplexobj(x) else np.float64)


def _scalar_out(result: Any, *inputs: Any) -> Any:
    """Return a python float when every input was a python number."""
    if all(isinstance(x, (int, float, complex)) for x in inputs):
        return float(result)
    return result


def noise_var_from_snr_db(snr_db: Any) -> Any:
    """Noise variance per real symbol for a unit-power real symbol: ``10^(-SNR_dB/10)``."""
    return 10.0 ** (-snr_db / 10.0)


def snr_db_from_noise_var(sigma2: Any) -> Any:
    """Inverse of :func:`noise_var_from_snr_db`: ``-10 log10(sigma2)``."""
    xp = _xp(sigma2)
    return _scalar_out(-10.0 * xp.log10(_as_array(sigma2, xp)), sigma2)


def received_snr(p: Any, g: Any, snr_db: Any) -> Any:
    """Linear per-block received SNR ``p * g * 10^(SNR_dB/10)`` (eq. 29 with amplitude sqrt(p))."""
    return p * g / noise_var_from_snr_db(snr_db)


def mse_zf(sigma2: Any, p: Any = 1.0, g: Any = 1.0) -> Any:
    """Zero-forcing MSE per real symbol, ``sigma2 / (p g)``.

    When ``p g = 0`` nothing reached the receiver; the layer then outputs 0 (the prior mean), so the
    MSE is the symbol power 1 rather than infinity.
    """
    xp = _xp(sigma2, p, g)
    s, pg = _as_array(sigma2, xp), _as_array(p, xp) * _as_array(g, xp)
    val = s / xp.where(pg > 0, pg, xp.ones_like(pg))  # no 0-division, so no NaN in gradients
    return _scalar_out(xp.where(pg > 0, val, xp.ones_like(val)), sigma2, p, g)


def mse_mmse(sigma2: Any, p: Any = 1.0, g: Any = 1.0) -> Any:
    """Linear-MMSE MSE per real symbol for a unit-power Gaussian symbol, ``sigma2 / (p g + sigma2)``."""
    return sigma2 / (p * g + sigma2)


def mse_none(sigma2: Any, p: Any = 1.0, h: Any = 1.0) -> Any:
    """MSE per real symbol with no equaliser (``x_hat = y``): ``|sqrt(p) h - 1|^2 + sigma2``.

    ``h`` is the complex gain (python complex, numpy or torch); for AWGN ``h = 1``.
    """
    xp = _xp(sigma2, p, h)
    a = xp.sqrt(_as_array(p, xp)) * _as_array(h, xp)
    return _scalar_out(xp.abs(a - 1) ** 2 + sigma2, sigma2, p, h)


def mse(equalizer: str, sigma2: Any, p: Any = 1.0, h: Any = 1.0) -> Any:
    """Per-real-symbol MSE of ``equalizer`` (``zf`` | ``mmse`` | ``none``) given the complex gain ``h``."""
    if equalizer == "none":
        return mse_none(sigma2, p, h)
    xp = _xp(sigma2, p, h)
    g = xp.abs(_as_array(h, xp)) ** 2
    if equalizer == "zf":
        return _scalar_out(mse_zf(sigma2, p, g), sigma2, p, h)
    if equalizer == "mmse":
        return _scalar_out(mse_mmse(sigma2, p, g), sigma2, p, h)
    raise ValueError(f"equalizer must be 'zf', 'mmse' or 'none', got {equalizer!r}")


def scaled_exp1(x: Any) -> Any:
    """``exp(x) * E1(x)`` for ``x >= 0`` without overflow (numpy or torch, batched).

    ``E1`` is the exponential integral (``scipy.special.exp1``). Power series on (0, 1], Lentz
    continued fraction on [1, inf) (Numerical Recipes ``expint``); both branches run on clamped
    inputs so that ``torch.where`` never sees a NaN (and gradients stay finite).
    """
    xp = _xp(x)
    x_in, x = x, _as_array(x, xp)
    lo = xp.clip(x, 1e-30, 1.0)  # 1e-30 keeps float32 finite; below it E1 is clamped
    hi = xp.maximum(x, xp.ones_like(x))

    # Series: E1(x) = -gamma - ln x - sum_{k>=1} (-x)^k / (k k!)
    acc = xp.zeros_like(lo)
    term = xp.ones_like(lo)
    for k in range(1, _SERIES_TERMS + 1):
        term = term * (-lo) / k
        acc = acc + term / k
    series = xp.exp(lo) * (-_EULER_GAMMA - xp.log(lo) - acc)

    # Continued fraction for exp(x) E1(x), n = 1 (modified Lentz).
    b = hi + 1.0
    c = xp.full_like(hi, 1e30)  # Lentz: 1 / tiny; its first update makes c = b
    d = 1.0 / b
    h = d
    for i in range(1, _CF_ITERS + 1):
        an = -float(i * i)
        b = b + 2.0
        d = 1.0 / (an * d + b)
        c = b + an / c
        h = h * (c * d)
    return _scalar_out(xp.where(x <= 1.0, series, h), x_in)


def ergodic_mse_mmse(sigma2: Any, p: Any = 1.0) -> Any:
    """``E_g[sigma2 / (p g + sigma2)]`` over Rayleigh ``g ~ Exp(1)``: ``s e^s E1(s)``, ``s = sigma2/p``.

    Limits: ``s = 0`` (no noise) gives 0, ``p = 0`` (``s = inf``) gives the prior power 1.
    """
    xp = _xp(sigma2, p)
    s2, pp = _as_array(sigma2, xp), _as_array(p, xp)
    pos = pp > 0
    s = s2 / xp.where(pos, pp, xp.ones_like(pp))
    s_safe = xp.where(pos & (s > 0), s, xp.ones_like(s))
    val = s_safe * scaled_exp1(s_safe)
    val = xp.where(s > 0, val, xp.zeros_like(val))
    return _scalar_out(xp.where(pos, val, xp.ones_like(val)), sigma2, p)


def ergodic_mse_zf(sigma2: Any, p: Any = 1.0) -> Any:
    """``E_g[sigma2 / (p g)]`` over Rayleigh ``g ~ Exp(1)`` diverges (``E[1/g] = inf``): returns inf
    for ``sigma2 > 0``. A reason to prefer ``mmse`` on fading links or to report median / outage."""
    xp = _xp(sigma2, p)
    s2 = _as_array(sigma2, xp) + 0.0 * _as_array(p, xp)
    return _scalar_out(xp.where(s2 > 0, xp.full_like(s2, math.inf), xp.zeros_like(s2)), sigma2, p)


def ergodic_mse(equalizer: str, sigma2: Any, p: Any = 1.0) -> Any:
    """Rayleigh-ergodic per-real-symbol MSE for ``zf`` | ``mmse`` | ``none``.

    ``none``: ``E|sqrt(p) h - 1|^2 + sigma2 = p + 1 + sigma2`` (E h = 0, E|h|^2 = 1).
    """
    if equalizer == "zf":
        return ergodic_mse_zf(sigma2, p)
    if equalizer == "mmse":
        return ergodic_mse_mmse(sigma2, p)
    if equalizer == "none":
        return p + 1.0 + sigma2
    raise ValueError(f"equalizer must be 'zf', 'mmse' or 'none', got {equalizer!r}")


def avg_snr_db(p_max_mw: Any, num_blocks: int, noise_power_mw: Any) -> Any:
    """Average per-block SNR in dB of an equal allocation, ``10 log10(P_max / (B N0))`` (eq. 30c).

    This is the ``snr_db`` the channel layer is driven with when powers are given relative to
    ``P_max / B`` (see :func:`relative_power`).
    """
    xp = _xp(p_max_mw, noise_power_mw)
    val = 10.0 * xp.log10(_as_array(p_max_mw, xp) / (num_blocks * _as_array(noise_power_mw, xp)))
    return _scalar_out(val, p_max_mw, noise_power_mw)


def relative_power(p_mw: Any, p_max_mw: Any, num_blocks: int) -> Any:
    """Block powers in mW -> the layer's relative powers ``p_b / (P_max / B)`` (equal allocation = 1)."""
    return p_mw / (p_max_mw / num_blocks)
