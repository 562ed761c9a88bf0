"""The noiseless reference channel (``channel.kind=none``): what arrives is what was sent."""

from __future__ import annotations

from meg_lightning.channels.base import CHANNELS, Channel


@CHANNELS.register("none")
class Noiseless(Channel):
    """No noise and h = 1: with an equaliser (or no power allocation) ``x_hat`` is ``x`` itself.
    Its SNR is reported as inf; the sweep gives it one cell per scheme."""

    noiseless = True
    order = 9
