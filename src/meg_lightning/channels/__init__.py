"""Channel models for seed transmission (paper Sec. II eq. 3, Sec. IV-A eqs. 28-29), registered
by ``channel.kind``: ``awgn``, ``rayleigh`` (block fading), ``none`` (noiseless) and every other
module of this package (each one model, :data:`CHANNELS`).

Plain ``nn.Module``s (no Lightning), batched, device-agnostic, seeded by an optional
``torch.Generator``. Conventions (each one is tested in ``tests/test_channel.py``):

- **Real symbols, complex channel uses.** The seed ``x`` (B, ...) is a vector of k real symbols per
  sample; the pair ``(x[2i], x[2i+1])`` is the complex symbol ``x[2i] + j x[2i+1]`` of channel use i.
  An odd k is padded with one zero real symbol (it carries no power and is dropped after the
  channel), so k real symbols always use ceil(k/2) complex channel uses.
- **Unit power per sample.** :class:`PowerNormalize` scales each sample to ``mean(x^2) = 1`` before
  the channel; the receiver knows the scale (side information) and ``x_hat`` is returned in x's
  original scale.
- **Noise.** The AWGN variance per REAL symbol is ``sigma^2 = 10^(-SNR_dB/10)`` (so the complex
  noise is CN(0, 2 sigma^2), i.e. sionna's ``no = 2 sigma^2`` per complex symbol, and SNR_dB is
  both the per-real and per-complex-symbol SNR of the unit-power seed).
- **Gains.** A model draws complex gains ``h`` (:meth:`Channel.draw_gains`, the one place a gain
  is drawn in the project), each constant over a group of consecutive complex symbols; the
  receiver has perfect CSI and applies the equaliser ``zf`` | ``mmse`` | ``none``.
- **Rayleigh block fading.** The k/2 complex symbols are cut into ``num_blocks`` equal consecutive
  blocks (an uneven split raises :class:`~meg_lightning.errors.ConfigError`); block b sees
  ``h_b ~ CN(0, 1)``, ``E|h_b|^2 = 1``, independent across blocks and samples (as
  ``sionna.phy.channel.RayleighBlockFading``). The receiver has perfect CSI and applies the
  equaliser ``zf`` | ``mmse`` | ``none``.
- **Power allocation (eq. 29).** The paper writes ``y_t = h_t p_t x_t + n``; we use the amplitude
  ``sqrt(p_b)`` so that ``p_b`` is a power: ``y_b = h_b sqrt(p_b) x_b + n_b``. ``power`` is an
  optional (B, num_blocks) tensor of linear powers RELATIVE to the unit normalised power (all ones
  == no allocation). With allocation the per-block received SNR is ``p_b |h_b|^2 10^(SNR_dB/10)``.
  A budget in mW maps to this as ``p_b = p_b_mW / (P_max / B)`` with
  ``snr_db = 10 log10(P_max / (B N0))`` (:func:`theory.relative_power`, :func:`theory.avg_snr_db`).

Closed forms (equaliser MSEs, ergodic Rayleigh expectations) are in :mod:`.theory`.
"""

from meg_lightning.channels import theory
from meg_lightning.channels.base import CHANNELS, Channel, PowerNormalize, build, kinds, make
from meg_lightning.channels.theory import noise_var_from_snr_db
from meg_lightning.registry import import_members

import_members(__name__, __path__)

__all__ = ["CHANNELS", "Channel", "PowerNormalize", "build", "kinds", "make",
           "noise_var_from_snr_db", "theory"]
