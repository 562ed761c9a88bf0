"""NOMA pairs simulated through the channel layer: the superposed seeds, each user's own channel,
and the receivers of the weak and the strong user (docs/MULTIUSER.md, "Access and receivers").

**Transmitter.** A pair (strong s, weak w; :func:`.access.pairs`) shares a slot. Each user's
seed is made by its scheme's own encoder at the slot's rate (a scheme calls its channel with the
seed; :class:`SeedRecorder` stands in for the channel and keeps what it was given, power-normalised
as the channel would send it) and the two are superposed in the same channel uses,
``x = sqrt(p_w) S_w x_w + sqrt(p_s) S_s x_s`` (``p_w = users.noma_power``, ``p_s = 1 - p_w``;
unit-power seeds, so the slot's power is 1). ``S_u`` is the user's scrambler (:func:`scramble`,
undone at the receiver): a fixed permutation and orthogonal rotation per user within each fading
block, power-preserving. Without it two seeds of one analog code would put their power, and so
their interference, into the same first symbols, where the code puts its most important
components; scrambled, the interference is spread over the block. Image i of a user is superposed
with its partner's seed of image i + 1 (mod n) of the same test latents, so the two seeds are
independent (n >= 2).

**Channel.** User u receives ``y_u = h_u x + n_u`` through ITS OWN channel object: the registered
model (``awgn``, ``rayleigh`` block fading, ``tdl``) at its average SNR, ``n_u`` of variance
``sigma_u^2 = 10^(-SNR_u/10)`` per real symbol, its own gains and noise drawn from its own
generator (one realisation per user and batch, the draws a single-user link of the same length
makes). The receiver has perfect CSI and equalises by zero forcing (``channel.equalizer=mmse``: the
LMMSE scaling ``1 / (1 + d)`` with d the disturbance variance it is told, below). After ZF, in
the unit-power domain of the seed t a receiver decodes (the other one, o, is the interference)::

    x_t_hat = x_t + sqrt(p_o / p_t) x_o + n / (h sqrt(p_t)),
    d = p_o / p_t + sigma^2 / (p_t |h|^2) = 1 / SINR,   SINR = p_t |h|^2 / (p_o |h|^2 + sigma^2)

per fading block (AWGN: |h| = 1). The link hands the scheme's decoder the SINR where it takes an
SNR (:class:`NomaLink`): ``csi_db`` = 10 log10 SINR per block (``meg-adaptive``), the noise variance
d per symbol (``linear``'s LMMSE), and the design SNR its encoder and decoder are built for
(:func:`design_snr_db`).

**Receivers.**

- **weak user** (every scheme): decodes its own seed treating the strong one as noise, at
  ``SINR_w = p_w |h|^2 / (p_s |h|^2 + sigma^2)``; design SNR ``p_w / (p_s + sigma^2)``.
- **strong user, analog seed, ``users.sic=lmmse``**: subtracts the per-symbol LMMSE estimate of
  the weak seed, ``x_w_hat = sqrt(p_w) |h|^2 (y/h) / (|h|^2 + sigma^2)``, then zero-forces its own
  seed out of the residual. The residual is ``(y/h) (p_s |h|^2 + sigma^2) / (|h|^2 + sigma^2)``,
  a scaled copy of the received signal: its SINR stays ``p_s |h|^2 / (p_w |h|^2 + sigma^2)``,
  exactly that of treating the weak seed as noise (computed, and tested). A per-symbol LMMSE
  cancellation removes nothing from an analog seed.
- **strong user, ``users.sic=reencode``** (default; the coded analog schemes: ``meg``,
  ``meg-adaptive``, ``linear``): decodes the weak user's latent with the weak user's decoder
  (its own seed as noise), re-encodes it with the weak user's encoder (the weak seed's power
  scale is side information, as for every seed), subtracts ``sqrt(p_w) h x_w_tilde`` and decodes its own seed
  from the residual, its decoder told the interference-free SNR ``p_s |h|^2 / sigma^2`` (perfect
  cancellation assumed: the residual ``sqrt(p_w) h (x_w - x_w_tilde)`` is not known at the UE).
  The un-coded seeds (``feature``, ``centralized``) have no structure to decode: they keep the
  LMMSE receiver. For ``linear`` the gain is small: its decoder and encoder are per-component
  linear shrinkage, so the re-encoded seed is close to a scaled copy of y again.
- **digital** (:class:`DigitalNomaUser`): each user's bits are the scheme's quantiser and LDPC
  codewords, its MCS chosen for its design SNR. The weak user decodes its codeword with the
  strong one as Gaussian noise of its power in the demapper's LLRs. The strong user decodes the
  weak user's codeword first (its own as noise), re-encodes the decoded bits and subtracts the
  codeword, then decodes its own codeword interference-free (design SNR ``p_s / sigma^2``).
  When the weak codeword fails its check at the strong user (the CRC with ``crc``; without one
  the decoded bits are compared with the sent bits, the link's ideal error detection), nothing is
  subtracted: the strong user decodes its own codeword with the weak one as noise, and the image
  is counted in ``info["sic_failed"]``. A correctly decoded weak codeword re-encodes to the sent
  one, and the strong user's link is then exactly its interference-free link (tested).

The residual is formed as ``y - sqrt(p_w) h x_w_tilde = h sqrt(p_s) x_s + n + sqrt(p_w) h (x_w -
x_w_tilde)``: the same signal, arranged so that a perfect cancellation leaves exactly the
interference-free link. With no power for the partner (``p = 1`` for one user, or a partner that
is not served) a user's link is its single-user link itself.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Optional

import torch
from torch import Tensor, nn

from meg_lightning.channels.base import PowerNormalize
from meg_lightning.multiuser.access import Slot, UserLink, pairs
from meg_lightning.schemes.base import SchemeOutput
from meg_lightning.schemes.digital import LatentDigitalScheme

#: the strong user's cancellation of an analog seed (``users.sic``)
SIC = ("lmmse", "reencode")
#: the equalisers of the NOMA receivers (both need the gains: ``none`` is refused)
EQUALIZERS = ("zf", "mmse")


def supports(scheme: Any) -> bool:
    """Whether a scheme (class) runs under NOMA: every analog one, and ``digital`` (the MCS link
    of :class:`LatentDigitalScheme`; the other digital schemes have no superposed receiver)."""
    if not scheme.digital:
        return True
    return (isinstance(scheme, type) and issubclass(scheme, LatentDigitalScheme)
            and scheme.__call__ is LatentDigitalScheme.__call__)


def power_db(p: float) -> float:
    return 10 * math.log10(p)


def cancels(link: UserLink, scheme: Any, sic: str) -> bool:
    """Whether ``link``'s user removes its partner's seed before decoding its own: the strong
    user of a pair with ``digital`` (codeword SIC) or, with ``sic=reencode``, a coded analog
    scheme (``meg``, ``meg-adaptive``, ``linear``)."""
    if link.role != "strong":
        return False
    return bool(scheme.digital) or (sic == "reencode" and reencodes(scheme))


def reencodes(scheme: Any) -> bool:
    """A coded analog latent scheme: its decoder and encoder give the structured SIC."""
    return bool(scheme.analog and scheme.uses_fc and scheme.yields_latent)


def design_snr_db(link: UserLink, cancelled: bool = False) -> float:
    """The SNR (dB) a NOMA user's encoder and decoder are built for (g = 1): its SINR with the
    partner as noise, ``p / (i + sigma^2)`` (:attr:`UserLink.snr_db`), or after cancelling it,
    ``p / sigma^2``; alone at full power its average SNR exactly."""
    if cancelled or link.interference == 0:
        return float(link.avg_snr_db) + (power_db(link.power) if link.power != 1.0 else 0.0)
    return link.snr_db


def _expand(v: Tensor, k: int) -> Tensor:
    """Per-group values (B, G) -> per real symbol (B, k): group g covers 2 n_c / G reals."""
    n_c = -(-k // 2)
    return v.repeat_interleave(2 * n_c // v.shape[1], dim=1)[:, :k]


def _fit(x: Tensor, k: int) -> Tensor:
    """x (B, m) cut or zero-padded to (B, k): a partner seed of another length."""
    return x[:, :k] if x.shape[1] >= k else torch.nn.functional.pad(x, (0, k - x.shape[1]))


#: the scrambling keys of the two users of a pair
KEYS = {"strong": 1, "weak": 2}
#: largest dense rotation of the scrambler (real symbols); longer gain groups are rotated in
#: blocks after a permutation of the whole group
ROTATION_MAX = 256


@functools.lru_cache(maxsize=64)
def _scrambler(key: int, m: int) -> tuple[Tensor, Tensor]:
    """(permutation (m,), rotations (m / b, b, b)) of user key ``key`` for gain groups of ``m``
    real symbols: a random permutation, then Haar-random orthogonal rotations of consecutive
    blocks of b (the largest divisor of m up to :data:`ROTATION_MAX`). Fixed by (key, m)."""
    gen = torch.Generator().manual_seed(1000 * key + 7)
    b = max(d for d in range(1, min(m, ROTATION_MAX) + 1) if m % d == 0)
    q, r = torch.linalg.qr(torch.randn(m // b, b, b, generator=gen, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)  # Haar: fix the signs
    return torch.randperm(m, generator=gen), q.float()


def scramble(x: Tensor, key: int, groups: int, inverse: bool = False) -> Tensor:
    """User ``key``'s scrambling of a seed x (B, k) within each of its ``groups`` gain groups
    (orthogonal, power-preserving; ``inverse``: undo it). Two users' seeds scrambled with
    different keys see each other as white interference within a group, whatever their codes'
    power profiles (an analog code puts most power into its first symbols, and a partner of the
    same code would put its interference into the same ones)."""
    B, k = x.shape
    n_c = -(-k // 2)
    flat = torch.nn.functional.pad(x, (0, 2 * n_c - k))  # (B, 2 n_c)
    m = 2 * n_c // groups
    perm, rot = _scrambler(key, m)
    perm, rot = perm.to(x.device), rot.to(x)
    v = flat.reshape(B, groups, m)  # (B, G, m)
    if not inverse:
        v = v[..., perm].reshape(B, groups, rot.shape[0], 1, rot.shape[1])  # (B, G, m/b, 1, b)
        v = (v @ rot.transpose(-1, -2)).reshape(B, groups, m)
    else:
        v = (v.reshape(B, groups, rot.shape[0], 1, rot.shape[1]) @ rot).reshape(B, groups, m)
        v = v[..., torch.argsort(perm)]
    return v.reshape(B, 2 * n_c)[:, :k]


class _Link(nn.Module):
    """A stand-in for the user's channel (a module, as the codes that keep their channel need):
    what it does not define is the channel's."""

    def __init__(self, channel: Any):
        super().__init__()
        self.channel = channel

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["channel"], name)


class SeedRecorder(_Link):
    """A stand-in for a channel that keeps the seed a scheme sends through it (``raw`` (B, k) as
    given, ``scale`` (B,) the power normalisation the channel applies, ones without) and returns
    it unchanged: no noise, no draw from any generator. ``snr_db`` is the SNR the scheme's
    encoder is built for; everything else is the channel's."""

    def __init__(self, channel: Any, snr_db: float, normalize: Optional[bool] = None,
                 box: Optional[dict] = None):
        super().__init__(channel)
        self.snr_db = float(snr_db)
        self.normalize = channel.normalize if normalize is None else bool(normalize)
        self.equalizer = "zf"
        self.box = {} if box is None else box

    def replace(self, snr_db: Optional[float] = None, equalizer: str = "zf",
                normalize: Optional[bool] = None) -> "SeedRecorder":
        return SeedRecorder(self.channel, self.snr_db if snr_db is None else snr_db,
                            self.normalize if normalize is None else normalize, self.box)

    def forward(self, x: Tensor, **_: Any) -> dict:
        B, k = x.shape[0], x[0].numel()
        raw = x.reshape(B, k).float()
        scale = (PowerNormalize()(raw)[1] if self.normalize else torch.ones(B, device=x.device))
        self.box.update(raw=raw, scale=scale)
        n_c = -(-k // 2)
        g, s = self.channel.groups(n_c), self.channel.segments(n_c)
        full = torch.full((B,), self.snr_db, device=x.device)
        return {"x_hat": x, "h": torch.ones(B, g, dtype=torch.complex64, device=x.device),
                "snr_db": full, "noise_var": 10 ** (-full / 10), "scale": scale,
                "power": torch.ones(B, self.channel.num_blocks, device=x.device),
                "csi_db": full.unsqueeze(1).expand(B, s).clone()}


def sender(scheme: Any) -> Any:
    """The scheme that puts the seed on the channel: X for ``X+dm`` (its diffusion receiver only
    refines X's latent estimate at the UE), else the scheme itself."""
    return getattr(scheme, "base", scheme)


def seed_of(scheme: Any, z: Tensor, i_0: Optional[Tensor], channel: Any, snr_db: float,
            slot: Optional[int] = None) -> tuple[Tensor, Tensor]:
    """(raw seed (B, k), its power scale (B,)): what ``scheme`` sends for ``z`` (and ``i_0``)
    when its encoder is built for ``snr_db`` on ``channel``'s model (in a slot of ``slot``
    symbols for a rate-less scheme)."""
    rec = SeedRecorder(channel, snr_db)
    link = rec if slot is None else Slot(rec, slot)
    scheme = sender(scheme)
    if scheme.yields_latent:
        scheme.transmit(z, channel=link, generator=None)
    else:
        scheme(z, i_0, channel=link, generator=None)
    return rec.box["raw"], rec.box["scale"]


class NomaLink(_Link):
    """The channel a NOMA user's scheme sees when it decodes seed t of power ``p_t`` from the
    user's received ``y = h (sqrt(p_t) x_t + sqrt(p_o) x_o) + n`` (the module docstring).

    ``channel``: the user's own channel at its average SNR; ``other``: the other seed in x_t's
    unit-power domain as it remains in y (x_o, or x_o - x_o_tilde after a cancellation; (B, k));
    ``told``: the interference power (a fraction of p_o) the receiver is told remains (1: the
    other seed as noise; 0: a cancellation assumed perfect); ``receiver``: ``noise`` (zero
    forcing, the other seed as noise) | ``lmmse`` (the strong user's LMMSE SIC of the other seed);
    ``snr_db``: the design SNR reported to the scheme; ``box``: the user's realisation (ZF noise
    ``n / h`` at unit power, gains, sigma^2), drawn from the generator of the first call and
    shared by every link of the user in the batch.

    Returns the channel's dict (without ``y``) for the equivalent single-user link: ``x_hat``
    (x's shape and scale), ``h`` the gains, ``noise_var`` sigma^2 / p_t, ``power`` (B, G) the equivalent power
    ``(sigma^2 / p_t) / (|h|^2 d)`` and ``csi_db`` 10 log10(1 / d) per block, so that every decoder
    that reads the channel state (``csi_db``, the noise variance after zero forcing) reads the
    SINR ``1 / d``."""

    def __init__(self, channel: Any, p_t: float, p_o: float, other: Tensor, *, told: float,
                 snr_db: float, receiver: str = "noise", box: Optional[dict] = None,
                 equalizer: Optional[str] = None, normalize: Optional[bool] = None,
                 keys: tuple[int, int] = (KEYS["weak"], KEYS["strong"])):
        if receiver not in ("noise", "lmmse"):
            raise ValueError(f"receiver must be noise or lmmse, got {receiver!r}")
        super().__init__(channel)
        self.p_t, self.p_o, self.other, self.keys = float(p_t), float(p_o), other, keys
        self.told, self.snr_db, self.receiver = float(told), float(snr_db), receiver
        self.box = {} if box is None else box
        self.equalizer = channel.equalizer if equalizer is None else equalizer
        self.normalize = channel.normalize if normalize is None else bool(normalize)

    @property
    def calibration(self) -> Any:
        """The user's own channel at the design SNR: where a receiver that calibrates itself on
        other latents (``X+dm``'s sigma_e^2) measures, the partner's seed taken as Gaussian
        noise of its power."""
        return self.channel.replace(snr_db=self.snr_db)

    def replace(self, snr_db: Optional[float] = None, equalizer: Optional[str] = None,
                normalize: Optional[bool] = None) -> "NomaLink":
        return NomaLink(self.channel, self.p_t, self.p_o, self.other, told=self.told,
                        snr_db=self.snr_db if snr_db is None else snr_db,
                        receiver=self.receiver, box=self.box,
                        equalizer=self.equalizer if equalizer is None else equalizer,
                        normalize=self.normalize if normalize is None else normalize,
                        keys=self.keys)

    def realisation(self, B: int, k: int, generator: Optional[torch.Generator],
                    like: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(ZF noise n / h (B, k) at unit power, gains h (B, G), sigma^2 (B,)) of this user,
        drawn once: the gains and the noise a single-user link of k symbols draws."""
        if "noise" not in self.box:
            inner = self.channel.replace(normalize=False, equalizer="zf")
            out = inner(torch.zeros(B, k, dtype=like.dtype, device=like.device), mode="eval",
                        generator=generator)
            self.box.update(noise=out["x_hat"], h=out["h"], sigma2=out["noise_var"])
        if tuple(self.box["noise"].shape) != (B, k):
            raise ValueError(f"a NOMA user's seeds must have one length, got {k} after "
                             f"{self.box['noise'].shape[1]}")
        return self.box["noise"], self.box["h"], self.box["sigma2"]

    def forward(self, x: Tensor, *, mode: Optional[str] = None, snr_db: Any = None,
                power: Optional[Tensor] = None, h: Optional[Tensor] = None,
                generator: Optional[torch.Generator] = None) -> dict:
        if power is not None or h is not None:
            raise ValueError("a NOMA link takes no per-block power or pre-drawn gains")
        if self.equalizer not in EQUALIZERS:
            raise ValueError(f"NOMA receivers equalise by {' or '.join(EQUALIZERS)}, got "
                             f"{self.equalizer!r}")
        B, k = x.shape[0], x[0].numel()
        flat = x.reshape(B, k).to(torch.promote_types(x.dtype, torch.float32))
        x_n, scale = (PowerNormalize()(flat) if self.normalize
                      else (flat, torch.ones(B, dtype=flat.dtype, device=x.device)))
        noise, gains, sigma2 = self.realisation(B, k, generator, flat)
        g_grp = gains.abs().pow(2).to(flat.dtype)  # (B, G) |h|^2
        g = _expand(g_grp, k)  # (B, k)
        s2 = sigma2.to(flat.dtype).view(B, 1)
        a = self.p_o / self.p_t
        # y / h in x_t's unit-power domain: x_t + sqrt(p_o / p_t) x_o + n / (h sqrt(p_t)), each
        # seed scrambled with its user's key on the channel, x_t's undone at the receiver
        G = g_grp.shape[1]
        zf = (scramble(x_n, self.keys[0], G)
              + math.sqrt(a) * scramble(_fit(self.other.to(flat), k), self.keys[1], G)
              + noise / math.sqrt(self.p_t))
        if self.receiver == "lmmse":
            # the LMMSE estimate of the other (unit-power) seed from y, per symbol, subtracted;
            # then zero forcing on the residual, whose gain on x_t is known
            total = self.p_t + self.p_o
            yh = math.sqrt(self.p_t) * zf  # y / h
            x_o_hat = math.sqrt(self.p_o) * g * yh / (g * total + s2)
            residual = yh - math.sqrt(self.p_o) * x_o_hat
            zf = residual / (math.sqrt(self.p_t) * (self.p_t * g + s2) / (g * total + s2))
        zf = scramble(zf, self.keys[0], G, inverse=True)
        d_grp = self.told * a + s2 / (self.p_t * g_grp.clamp_min(1e-12))  # (B, G) 1 / SINR
        est = zf if self.equalizer == "zf" else zf / (1 + _expand(d_grp, k))
        x_hat = (est * scale.unsqueeze(1)).reshape(x.shape).to(x.dtype)
        n_c = -(-k // 2)
        seg = self.channel.segments(n_c)
        csi = (-10 * torch.log10(d_grp)).repeat_interleave(seg // d_grp.shape[1], dim=1)
        s2_t = sigma2.to(flat.dtype) / self.p_t
        return {"x_hat": x_hat, "h": gains, "snr_db": 10 * torch.log10(1 / s2_t),
                "noise_var": s2_t, "scale": scale,
                "power": s2_t.view(B, 1) / (g_grp.clamp_min(1e-12) * d_grp), "csi_db": csi}


class _Partner:
    """The partner's test latents and images for a batch of a user's: image i -> i + 1 (mod n).
    The batch is located among the frame's latents (the sweep sends them in order)."""

    def __init__(self, z: Tensor, i_0: Tensor):
        self.z, self.i_0, self.cursor = z.cpu(), i_0.cpu(), 0

    def batch(self, zb: Tensor) -> tuple[Tensor, Tensor]:
        n, b, zc = len(self.z), len(zb), zb.detach().cpu()
        starts = [self.cursor] + [s for s in range(n - b + 1) if s != self.cursor]
        start = next((s for s in starts if s + b <= n and torch.equal(self.z[s:s + b], zc)), None)
        if start is None:
            raise ValueError("a NOMA user's latents must be a run of the frame's test latents")
        self.cursor = (start + b) % n
        idx = (torch.arange(start, start + b) + 1) % n
        return self.z[idx].to(zb.device), self.i_0[idx].to(zb.device)


class NomaUser:
    """One user of a NOMA pair as a scheme (``run_cell`` calls it like one): its scheme, its
    partner's, the two links of the pair and the frame's test latents and images. Called with the
    user's own channel (average SNR) and generator; see the module docstring for the receivers."""

    def __init__(self, own: Any, link: UserLink, partner: Any, partner_link: Optional[UserLink],
                 z: Tensor, i_0: Tensor, *, sic: str = "reencode", slot: Optional[int] = None):
        if sic not in SIC:
            raise ValueError(f"sic must be one of {', '.join(SIC)}, got {sic!r}")
        self.own, self.link, self.partner, self.partner_link = own, link, partner, partner_link
        self.sic, self.slot = sic, slot
        self.alone = partner is None or partner_link is None or partner_link.power == 0
        self.cancels = not self.alone and cancels(link, type(sender(own)), sic)
        self.snr_db = (design_snr_db(link, True) if self.alone
                       else design_snr_db(link, self.cancels))
        if not self.alone:
            self.partner_snr_db = design_snr_db(partner_link, cancels(
                partner_link, type(sender(partner)), sic))
        self.partners = _Partner(z, i_0)
        self.keys = (KEYS.get(link.role, 0), KEYS.get(partner_link.role, 0)
                     if partner_link is not None else 0)
        self.name, self.fc = getattr(own, "name", ""), getattr(own, "fc", None)

    def _wrap(self, link: Any) -> Any:
        return link if self.slot is None else Slot(link, self.slot)

    def _alone(self, channel: Any) -> Any:
        """The user's single-user link: the channel itself at full power, else at its power."""
        return channel if self.link.power == 1.0 else channel.replace(snr_db=self.snr_db)

    @torch.no_grad()
    def __call__(self, z: Tensor, i_0: Tensor, *, channel, generator, prompts=None
                 ) -> SchemeOutput:
        if self.alone:
            return self.own(z, i_0, channel=self._wrap(self._alone(channel)),
                            generator=generator, prompts=prompts)
        z_p, i_p = self.partners.batch(z)
        p_t, p_o = self.link.power, self.partner_link.power
        raw_p, scale_p = seed_of(self.partner, z_p, i_p, channel, self.partner_snr_db, self.slot)
        x_p = raw_p / scale_p.unsqueeze(1)  # (B, k) the partner's seed as sent, unit power
        if not self.cancels:
            receiver = "lmmse" if self.link.role == "strong" else "noise"
            link = NomaLink(channel, p_t, p_o, x_p, told=1.0, snr_db=self.snr_db,
                            receiver=receiver, keys=self.keys)
            return self.own(z, i_0, channel=self._wrap(link), generator=generator,
                            prompts=prompts)
        # the structured SIC: decode the weak latent (own seed as noise), re-encode, subtract
        raw_s, scale_s = seed_of(self.own, z, i_0, channel, self.snr_db, self.slot)
        box: dict = {}
        to_weak = NomaLink(channel, p_o, p_t, raw_s / scale_s.unsqueeze(1), told=1.0,
                           snr_db=self.partner_snr_db, box=box, keys=self.keys[::-1])
        z_w_hat = sender(self.partner).transmit(z_p, channel=self._wrap(to_weak),
                                                generator=generator)[0]
        raw_t, _ = seed_of(self.partner, z_w_hat, None, channel, self.partner_snr_db, self.slot)
        left = x_p - _fit(raw_t, x_p.shape[1]) / scale_p.unsqueeze(1)
        link = NomaLink(channel, p_t, p_o, left, told=0.0, snr_db=self.snr_db, box=box,
                        keys=self.keys)
        return self.own(z, i_0, channel=self._wrap(link), generator=generator, prompts=prompts)


class DigitalNomaUser(NomaUser):
    """One user of a NOMA pair with ``digital`` (the LDPC scheme): codeword SIC at the strong
    user, the strong codeword as noise at the weak one (the module docstring). ``info`` adds
    ``sic_failed`` (1.0 for an image whose weak codeword failed at the strong user)."""

    @torch.no_grad()
    def __call__(self, z: Tensor, i_0: Tensor, *, channel, generator, prompts=None
                 ) -> SchemeOutput:
        if self.alone:
            return self.own(z, i_0, channel=self._alone(channel), generator=generator)
        z_p, _ = self.partners.batch(z)
        p_t, p_o = self.link.power, self.partner_link.power
        a = p_o / p_t
        m = self.own.mcs_for(channel.replace(snr_db=self.snr_db))
        m_p = self.partner.mcs_for(channel.replace(snr_db=self.partner_snr_db))
        link, link_p = self.own.link(m, z.device), self.partner.link(m_p, z.device)
        bits = self.own.quantizer.quantise(z, link.info_bits)  # (B, K)
        bits_p = self.partner.quantizer.quantise(z_p, link_p.info_bits)
        x, x_p = link.encode(bits), link_p.encode(bits_p)  # (B, n_complex) QAM, Es = 1
        if x_p.shape != x.shape:
            raise ValueError(f"a NOMA pair's codewords need one budget, got {tuple(x.shape)} "
                             f"and {tuple(x_p.shape)} QAM symbols")
        # the user's interference-free link in its own unit-power domain (SNR_u + 10 log10 p_u):
        # the draws of its single-user link; the partner's codeword adds after ZF
        alone = channel.replace(snr_db=design_snr_db(self.link, True))
        y, no = link.channel(x, channel=alone, generator=generator)
        failed = torch.zeros(z.shape[0], dtype=torch.bool, device=y.device)
        if self.cancels:
            # the weak codeword, in its unit-power domain, with the own codeword as noise
            out_p = link_p.receive((y + math.sqrt(a) * x_p) / math.sqrt(a), (no + 1) / a, bits_p)
            failed = out_p.detected_failure.any(1)  # (B,)
            x_t = link_p.encode(out_p.bits_hat)  # the re-encoded weak codeword
            x_t = torch.where(failed.unsqueeze(1), torch.zeros_like(x_t), x_t)
            left, told = x_p - x_t, torch.where(failed.unsqueeze(1), a, 0.0)
        else:
            left, told = x_p, torch.full_like(no, a)
        out = link.receive(y + math.sqrt(a) * left, no + told, bits)
        res = self.own.output(z, out, m)
        res.info["sic_failed"] = failed.double().cpu()
        return res


def noma_users(links: list[UserLink], built: dict[int, tuple], z: Tensor, i_0: Tensor,
               sic: str = "reencode") -> dict[int, tuple]:
    """The sweep's users of a NOMA frame: ``built[u]`` is user u's (scheme, channel, rate,
    symbols, note) alone in its slot (the channel at its average SNR, a :class:`Slot` for a
    rate-less scheme); returns the same with each paired user's scheme a :class:`NomaUser`
    (:class:`DigitalNomaUser`) and its channel the plain channel."""
    out = dict(built)
    snrs = [link.avg_snr_db for link in links]
    for group in pairs(snrs):
        if len(group) == 1:
            continue
        for u, o in (group, group[::-1]):
            scheme, ch, rate, symbols, note = built[u]
            if scheme is None:
                continue
            partner = built[o][0]
            slot = ch.m if isinstance(ch, Slot) else None
            plain = ch.channel if isinstance(ch, Slot) else ch
            cls = DigitalNomaUser if type(scheme).digital else NomaUser
            user = cls(scheme, links[u], partner, links[o] if partner is not None else None,
                       z, i_0, sic=sic, slot=slot)
            out[u] = (user, plain, rate, symbols, note)
    return out
