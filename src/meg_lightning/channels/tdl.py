"""3GPP TR 38.901 tapped delay line (TDL) fading over an OFDM resource grid, one gain per resource
element (``channel.kind=tdl``, settings ``channel.tdl.*``), drawn with Sionna."""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Optional

import torch

from meg_lightning.channels.base import CHANNELS, Channel, _like
from meg_lightning.errors import ConfigError

#: the scalable TR 38.901 profiles (Sec. 7.7.2, Tables 7.7.2-1..5): A-C NLOS, D-E LOS
MODELS = ("A", "B", "C", "D", "E")
#: sinusoids per tap of Sionna's sum-of-sinusoids fading (its default)
SINUSOIDS = 20
#: elements of Sionna's largest per-call tensor, (batch, taps, OFDM symbols, sinusoids): a long
#: seed over a large batch is drawn in batch chunks so that memory stays bounded (~32 MB each)
_CHUNK_ELEMENTS = 1 << 23


def _positive(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


def _count(v: Any, low: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= low


@dataclasses.dataclass
class TDLSettings:
    """``channel.tdl.*``: the TDL profile and the OFDM numerology it is seen through."""

    model: str = "A"  # TR 38.901 TDL profile: A | B | C (NLOS) | D | E (LOS, Rician first tap)
    delay_spread_ns: float = 100.0  # RMS delay spread (ns) the normalised profile is scaled to
    carrier_frequency_hz: float = 3.5e9  # carrier frequency (Hz): with the speed, the Doppler
    speed_mps: float = 0.0  # UE speed (m/s): max Doppler speed * carrier / c; 0: a static channel
    subcarrier_spacing_hz: float = 30e3  # subcarrier spacing (Hz), 15e3 * 2^mu in 5G NR
    num_subcarriers: int = 64  # subcarriers per OFDM symbol (the FFT size, all carry data)
    cyclic_prefix: int = 4  # cyclic prefix length (samples); sets the OFDM symbol duration
    # (1 + cyclic_prefix / num_subcarriers) / subcarrier_spacing_hz, so the Doppler between symbols
    normalize_channel: bool = False  # also scale each draw to unit mean |H|^2 over its grid
    # (Sionna's normalize_channel): every draw then has the configured SNR, and the fading of the
    # grid as a whole is gone; false keeps the profile's own unit power (E|H|^2 = 1 on average)

    def validate(self, prefix: str) -> None:
        for key, ok, expected in (
                ("model", self.model in MODELS, f"one of {', '.join(MODELS)} (TR 38.901 TDL)"),
                ("delay_spread_ns", _positive(self.delay_spread_ns), "a positive number (ns)"),
                ("carrier_frequency_hz", _positive(self.carrier_frequency_hz),
                 "a positive number (Hz)"),
                ("speed_mps", _positive(self.speed_mps) or self.speed_mps == 0,
                 "a number >= 0 (m/s)"),
                ("subcarrier_spacing_hz", _positive(self.subcarrier_spacing_hz),
                 "a positive number (Hz)"),
                ("num_subcarriers", _count(self.num_subcarriers, 1), "a positive integer"),
                ("cyclic_prefix", _count(self.cyclic_prefix, 0), "an integer >= 0 (samples)"),
                ("normalize_channel", isinstance(self.normalize_channel, bool), "true or false")):
            if not ok:
                raise ConfigError(f"{prefix}.{key}", getattr(self, key), expected)

    @property
    def symbol_duration_s(self) -> float:
        """One OFDM symbol with its cyclic prefix (s): the time between a subcarrier's gains."""
        return (1 + self.cyclic_prefix / self.num_subcarriers) / self.subcarrier_spacing_hz


def _sionna_device(device: torch.device) -> str:
    """Sionna names devices ``cpu`` / ``cuda:<i>`` (a bare ``cuda`` is the current one)."""
    if device.type == "cuda":
        return f"cuda:{torch.cuda.current_device() if device.index is None else device.index}"
    return str(device)


@functools.cache
def _sionna() -> tuple[type, type, type]:
    """``(TDL, ResourceGrid, GenerateOFDMChannel)``; this TDL draws from a generator it is given."""
    # importing Sionna builds its global config, which re-seeds torch's global RNG at random: the
    # caller's RNG state is kept so that a seeded run stays seeded
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=cuda):
        # Sionna is heavy (seconds to import): imported when a TDL link is first drawn
        from sionna.phy.channel import GenerateOFDMChannel  # noqa: PLC0415
        from sionna.phy.channel.tr38901 import TDL  # noqa: PLC0415
        from sionna.phy.ofdm import ResourceGrid  # noqa: PLC0415

    class SeededTDL(TDL):
        """Sionna's TDL drawing from ``rng`` instead of Sionna's global generator (every draw
        of ``TDL.__call__`` reads ``self.torch_rng``)."""

        def __init__(self, *args: Any, rng: torch.Generator, **kwargs: Any):
            super().__init__(*args, **kwargs)
            self._rng = rng

        @property
        def torch_rng(self) -> torch.Generator:
            return self._rng

    return SeededTDL, ResourceGrid, GenerateOFDMChannel


@CHANNELS.register("tdl")
class TDLChannel(Channel):
    """3GPP TR 38.901 TDL fading (Sec. 7.7.2, profiles TDL-A..E) seen through OFDM: one complex
    gain per resource element (RE), equalised per subcarrier with perfect CSI.

    **Profile.** The tabulated tap delays are normalised to an RMS delay spread of 1 and scaled by
    ``delay_spread_ns``; the tap powers are normalised to a total of 1 (TDL-D/E: the LOS
    specular component included), so the realised power delay profile has RMS delay spread
    ``delay_spread_ns`` (within 1 %, the tables' rounding). Each tap is a sum of sinusoids with the
    UE's maximum Doppler ``speed_mps * carrier_frequency_hz / c`` (Jakes spectrum: the gain of a
    subcarrier decorrelates over time as ``J0(2 pi f_D t)``); speed 0 is a static channel.

    **Grid.** The seed's ``n_c`` complex symbols fill the grid frequency first: RE r is subcarrier
    ``r % num_subcarriers`` of OFDM symbol ``r // num_subcarriers``; ``ceil(n_c /
    num_subcarriers)`` consecutive OFDM symbols, ``symbol_duration_s`` apart (the last one possibly
    part-filled). The gain of RE (s, n) is the channel's frequency response at subcarrier n
    (baseband ``(n - floor(N/2)) * subcarrier_spacing_hz``) during OFDM symbol s,
    ``H = sum_m a_m(s) exp(-j 2 pi f_n tau_m)``: the CIR is constant within an OFDM symbol and
    the cyclic prefix is assumed to cover the delays (no inter-symbol or inter-carrier
    interference), Sionna's ``GenerateOFDMChannel``. ``groups(n_c) = n_c``; the power blocks
    (``num_blocks``) are contiguous runs of REs.

    **Normalisation.** ``E|H|^2 = 1`` per RE from the unit-power profile, so the configured SNR
    is the average received SNR per real symbol. ``normalize_channel=True`` also scales each draw
    to unit mean ``|H|^2`` over its grid (Sionna's ``normalize_channel``), removing the fading of
    the grid as a whole.

    **Randomness.** Sionna draws the Doppler phases and angles from a generator of this channel's
    own, seeded per call by one integer drawn from the caller's ``generator``: the same generator
    state gives the same gains. Sionna is imported when a TDL link is first drawn (torch's
    global RNG is left as it was).

    References: 3GPP TR 38.901 V19.2 Sec. 7.7.2; Sionna ``sionna.phy.channel.tr38901.TDL``.
    """

    Settings = TDLSettings
    fading = True
    order = 2

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        # Sionna's TDL and its generator by (settings, device, precision), its OFDM channels by
        # (that, OFDM symbols): plain dicts, so they stay out of the module tree and state_dict
        self._tdl: dict[tuple, tuple[Any, torch.Generator]] = {}
        self._ofdm: dict[tuple, Any] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__())
        state["_tdl"], state["_ofdm"] = {}, {}  # rebuilt on demand (generators do not copy)
        return state

    def groups(self, n_c: int) -> int:
        return n_c

    def _ofdm_channel(self, num_symbols: int, device: torch.device, double: bool
                      ) -> tuple[Any, Any, torch.Generator]:
        """Sionna's OFDM channel over ``num_symbols`` OFDM symbols, its TDL and the generator the
        TDL draws from."""
        s = self.settings
        dev = _sionna_device(device)
        precision = "double" if double else "single"
        key = (dataclasses.astuple(s), dev, precision)
        if key not in self._tdl:
            TDL, _, _ = _sionna()
            rng = torch.Generator(device=dev)
            tdl = TDL(s.model, s.delay_spread_ns * 1e-9, s.carrier_frequency_hz,
                      num_sinusoids=SINUSOIDS, min_speed=s.speed_mps, max_speed=s.speed_mps,
                      rng=rng, precision=precision, device=dev)
            self._tdl[key] = (tdl, rng)
        tdl, rng = self._tdl[key]
        if (key, num_symbols) not in self._ofdm:
            _, ResourceGrid, GenerateOFDMChannel = _sionna()
            grid = ResourceGrid(num_ofdm_symbols=num_symbols, fft_size=s.num_subcarriers,
                                subcarrier_spacing=s.subcarrier_spacing_hz,
                                cyclic_prefix_length=s.cyclic_prefix, precision=precision,
                                device=dev)
            self._ofdm[key, num_symbols] = GenerateOFDMChannel(
                tdl, grid, normalize_channel=s.normalize_channel, precision=precision, device=dev)
        return self._ofdm[key, num_symbols], tdl, rng

    def draw_gains(self, batch: int, n_c: int, generator: Optional[torch.Generator] = None,
                   like: Optional[torch.Tensor] = None) -> torch.Tensor:
        like = _like(like)
        double = like.dtype == torch.float64
        ctype = torch.complex128 if double else torch.complex64
        N = self.settings.num_subcarriers
        symbols = -(-n_c // N)
        # static: every OFDM symbol sees the same CIR, so one is drawn (the same random draws)
        steps = 1 if self.settings.speed_mps == 0 else symbols
        # one integer from the caller's generator seeds Sionna's draws of this call
        where = generator.device if generator is not None else torch.device("cpu")
        seed = int(torch.randint(0, 2 ** 62, (1,), generator=generator, device=where))
        if batch == 0 or n_c == 0:
            return torch.zeros(batch, n_c, dtype=ctype, device=like.device)
        ofdm, tdl, rng = self._ofdm_channel(steps, like.device, double)
        rng.manual_seed(seed)
        chunk = max(1, _CHUNK_ELEMENTS // (tdl.num_clusters * steps * SINUSOIDS))
        parts = []
        for start in range(0, batch, chunk):
            h = ofdm(min(chunk, batch - start))  # (b, 1, 1, 1, 1, steps, N)
            parts.append(h.reshape(h.shape[0], steps, N))
        h = torch.cat(parts).to(device=like.device, dtype=ctype)  # (batch, steps, N)
        if steps != symbols:
            h = h.expand(batch, symbols, N)
        return h.reshape(batch, symbols * N)[:, :n_c]
