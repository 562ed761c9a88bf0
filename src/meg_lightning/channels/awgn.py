"""Additive white Gaussian noise: ``y = sqrt(p) x + n`` (paper eq. 3), h = 1."""

from __future__ import annotations

from meg_lightning.channels.base import CHANNELS, Channel


@CHANNELS.register("awgn")
class AWGN(Channel):
    """The AWGN channel: every gain is 1; only the noise (and any power allocation) acts."""

    order = 0
