"""SNR-adaptive, CSI-aware convolutional codec for spatial latents (``codec.arch=adaptive``).

One model serves a range of SNRs (as ADJSCC, SwinJSCC, DiffJSCC do) instead of the paper's one
model per training SNR. Both ends know the nominal SNR; the decoder also knows, for block fading
with CSI, each block's effective SNR after equalisation, |h_b|^2 p_b SNR (including the PPO
agent's block power p_b).

Data flow::

    encoder g_a(z, snr):
        z (B, C, h, w) --Linear(|z|, k) (dense "KLT" path, optional)--> c (B, k)
                       * per-symbol gain exp(lg(snr))                     (learned power loading)
        + conv trunk: Conv3x3 -> [ResBlock + FiLM(snr)] x n, stride-2 down to <= 8x8
                      -> Conv1x1 -> m = ceil(k / (h' w')) maps -> flatten, first k  (B, k)
        = x (B, k)   (the channel normalises it to unit power)

    decoder g_s(x_hat, snr, csi):
        dense path: c_hat_i = x_hat_i exp(-lg_i) sigmoid(ln P'_i + s_i ln10/10)   (LMMSE shrinkage,
                    exact for the linear code: P'_i the symbol's relative power, s_i its effective
                    SNR in dB)  -> z_lin = Linear(k, |z|)(c_hat)
        conv path:  [x_hat map, effective-SNR map] (2m, h', w') -> Conv3x3 -> ResBlocks + FiLM
                    -> nearest-upsample to (h, w) -> concat z_lin -> ResBlock + FiLM -> Conv3x3
                    = r, the non-linear correction
        gate="posterior": r -= U diag(shrink) U^T r  (U: the KLT basis of the dense path; along
                    sent component i only the share 1 - shrink_i, its LMMSE posterior variance
                    share, is corrected: at high SNR the reliably received components stay the
                    linear code's, the correction goes to the unsent and the noisy ones)
        z_hat = z_lin + r  (B, C, h, w)

The dense path lets the code start as (and never be worse than reachable) the optimal linear code:
:meth:`AdaptiveEncoder.init_linear` / :meth:`AdaptiveDecoder.init_linear` set it to the KLT of
training latents; the conv paths start at zero and learn the non-linear remainder. At SD-v1.5
size (|z| = 16384) the dense path alone would cost 2 |z| k parameters, so ``skip="auto"`` keeps it
only for |z| <= DENSE_SKIP_MAX_NUMEL; the conv paths carry the whole code there.

FiLM (Perez et al. 2018) as in SwinJSCC's SNR modulation: every residual block scales and shifts
its features by (1 + gamma(e), beta(e)) with e an embedding of the channel state.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from meg_lightning.codecs.base import ARCHS, CodecArch, check_code
from meg_lightning.errors import ConfigError

#: Above this latent size the dense linear path is dropped under ``skip="auto"`` (it would cost
#: 2 |z| k parameters: 268M at SD-v1.5's |z| = 16384, fc = 0.5).
DENSE_SKIP_MAX_NUMEL = 4096
SKIPS = ("auto", "dense", "none")
GATES = ("none", "posterior")
#: Spatial size the conv trunk down-samples to (stride 2 while larger): 64x64 -> 8x8.
TRUNK_MAX_SIDE = 8
#: Effective SNRs are clipped to this range (dB) before entering the networks: a deep fade gives
#: -inf dB, a noiseless channel +inf.
SNR_CLIP_DB = (-30.0, 50.0)
LN10_OVER_10 = math.log(10.0) / 10.0


def use_dense_skip(skip: str, numel: int) -> bool:
    if skip not in SKIPS:
        raise ConfigError("codec.skip", skip, f"one of {', '.join(SKIPS)}")
    return skip == "dense" or (skip == "auto" and numel <= DENSE_SKIP_MAX_NUMEL)


def trunk_side(h: int, w: int) -> tuple[int, int, int]:
    """(h', w', number of stride-2 steps) of the conv trunk for a (h, w) latent."""
    steps = 0
    while max(h, w) > TRUNK_MAX_SIDE and h % 2 == 0 and w % 2 == 0:
        h, w, steps = h // 2, w // 2, steps + 1
    return h, w, steps


def snr_features(snr_db: torch.Tensor) -> torch.Tensor:
    """Scaled SNR for the networks: clip to SNR_CLIP_DB, then / 10 (so -10..20 dB -> -1..2)."""
    return snr_db.clamp(*SNR_CLIP_DB) / 10.0


class StateEmbedding(nn.Module):
    """Channel state (B, n_in) scaled SNRs -> embedding (B, dim) for FiLM."""

    def __init__(self, n_in: int, dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_in, dim), nn.GELU(), nn.Linear(dim, dim), nn.GELU())

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return self.net(s)


class FiLMResBlock(nn.Module):
    """u + Conv3x3(GELU(FiLM_e(Conv3x3(GELU(u))))), FiLM: (1 + gamma(e)) * v + beta(e).

    gamma and beta start at zero, so an untrained block is SNR-independent until the data ask."""

    def __init__(self, width: int, emb_dim: int):
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.film = nn.Linear(emb_dim, 2 * width)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)

    def forward(self, u: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.film(e)[:, :, None, None].chunk(2, dim=1)  # (B, width, 1, 1) each
        v = self.conv1(F.gelu(u))
        v = (1 + gamma) * v + beta
        return u + self.conv2(F.gelu(v))


class AdaptiveEncoder(nn.Module):
    """g_a(z, snr_db) -> x (B, k); see the module docstring. ``snr_db`` (B,) in dB."""

    adaptive = True

    def __init__(self, latent_shape: Sequence[int], k: int, width: int = 64, blocks: int = 2,
                 skip: str = "auto"):
        super().__init__()
        self.latent_shape, self.numel = check_code(latent_shape, k)
        C, h, w = self.latent_shape
        self.k = k
        self.h2, self.w2, steps = trunk_side(h, w)
        self.m = -(-k // (self.h2 * self.w2))  # code maps: m h' w' >= k symbols
        self.dense = use_dense_skip(skip, self.numel)
        self.embed = StateEmbedding(1, width)
        self.stem = nn.Conv2d(C, width, 3, padding=1)
        self.down = nn.ModuleList(nn.Conv2d(width, width, 4, stride=2, padding=1)
                                  for _ in range(steps))
        self.blocks = nn.ModuleList(FiLMResBlock(width, width) for _ in range(blocks))
        self.head = nn.Conv2d(width, self.m, 1)
        if self.dense:
            self.linear = nn.Linear(self.numel, k)
            # log-gain per symbol as a function of the SNR (power loading): lg = a + W e(snr)
            self.gain = nn.Linear(width, k)
            nn.init.zeros_(self.gain.weight)
            nn.init.zeros_(self.gain.bias)
            # the conv path starts silent: the code starts as the (KLT-initialised) linear one
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def log_gain(self, e: torch.Tensor) -> torch.Tensor:
        """Per-symbol log amplitude of the dense path (B, k)."""
        return self.gain(e)

    def forward(self, z: torch.Tensor, snr_db: torch.Tensor) -> torch.Tensor:
        B = z.shape[0]
        e = self.embed(snr_features(snr_db).reshape(B, 1))  # (B, width)
        u = self.stem(z)  # (B, width, h, w)
        for down in self.down:
            u = down(F.gelu(u))  # halves h, w
        for block in self.blocks:
            u = block(u, e)  # (B, width, h', w')
        x = self.head(F.gelu(u)).flatten(1)[:, : self.k]  # (B, k)
        if self.dense:
            x = x + self.linear(z.flatten(1)) * self.log_gain(e).exp()
        return x

    @torch.no_grad()
    def init_linear(self, mean: torch.Tensor, eigvecs: torch.Tensor, log_gain: torch.Tensor) -> None:
        """Dense path := KLT: c = U_r^T (z - mu), r = eigvecs.shape[1] <= k components (the rest
        keep their random rows), gains exp(log_gain) (r,) at every SNR to start with."""
        if not self.dense:
            return
        r = min(eigvecs.shape[1], self.k)
        u = eigvecs[:, :r].T.to(self.linear.weight)  # (r, |z|)
        self.linear.weight[:r] = u
        self.linear.bias[:r] = -(u @ mean.to(u))
        self.gain.bias[:r] = log_gain[:r].to(u)
        # symbols with no known component would spend power on random projections: mute them
        self.gain.bias[r:] = -10.0


class AdaptiveDecoder(nn.Module):
    """g_s(x_hat, snr_db, csi_db) -> z_hat (B, C, h, w); see the module docstring.

    ``snr_db`` (B,) the nominal SNR; ``csi_db`` (B, num_blocks) each block's effective SNR after
    equalisation in dB (the k symbols are cut into num_blocks consecutive equal blocks, as the
    channel does; AWGN: one block at ``snr_db``)."""

    adaptive = True

    def __init__(self, latent_shape: Sequence[int], k: int, width: int = 64, blocks: int = 2,
                 skip: str = "auto", gate: str = "none"):
        super().__init__()
        self.latent_shape, self.numel = check_code(latent_shape, k)
        C, h, w = self.latent_shape
        self.k = k
        self.h2, self.w2, steps = trunk_side(h, w)
        self.m = -(-k // (self.h2 * self.w2))
        self.dense = use_dense_skip(skip, self.numel)
        self.embed = StateEmbedding(3, width)  # nominal, mean and min effective SNR
        self.stem = nn.Conv2d(2 * self.m, width, 3, padding=1)
        self.blocks = nn.ModuleList(FiLMResBlock(width, width) for _ in range(blocks))
        self.up = nn.ModuleList(nn.Conv2d(width, width, 3, padding=1) for _ in range(steps))
        self.merge = nn.Conv2d(width + C, width, 3, padding=1)
        self.refine = FiLMResBlock(width, width)
        self.head = nn.Conv2d(width, C, 3, padding=1)
        if self.dense:
            self.linear = nn.Linear(k, self.numel)
            # ln lambda_i: the variance of the dense path's symbol i before its gain (LMMSE prior)
            self.log_var = nn.Parameter(torch.zeros(k))
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)
        if gate not in GATES:
            raise ConfigError("codec.gate", gate, f"one of {', '.join(GATES)}")
        if gate == "posterior" and not self.dense:
            raise ConfigError("codec.gate", gate, "none when the dense path is off (codec.skip="
                              f"none, or auto with |z| = {self.numel} > {DENSE_SKIP_MAX_NUMEL})")
        self.gate = gate
        if gate == "posterior":
            # the KLT basis U (|z|, k) the gate projects on (set with the dense path)
            self.register_buffer("basis", torch.zeros(self.numel, k))

    def _symbol_snr(self, csi_db: torch.Tensor) -> torch.Tensor:
        """(B, num_blocks) block SNRs -> (B, k) per real symbol (blocks are consecutive and equal,
        over the k real symbols padded to even)."""
        B, nb = csi_db.shape
        per_block = 2 * (-(-self.k // 2) // nb)
        if per_block * nb < self.k:
            raise ConfigError("csi_db.shape", tuple(csi_db.shape),
                              f"(B, num_blocks) with num_blocks dividing {-(-self.k // 2)} "
                              "complex symbols")
        return csi_db.repeat_interleave(per_block, dim=1)[:, : self.k]

    def forward(self, x_hat: torch.Tensor, snr_db: torch.Tensor, csi_db: torch.Tensor,
                log_gain: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.decode_parts(x_hat, snr_db, csi_db, log_gain)[0]

    def decode_parts(self, x_hat: torch.Tensor, snr_db: torch.Tensor, csi_db: torch.Tensor,
                     log_gain: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(z_hat, z_lin): the decoder's output and its dense (linear) path alone (zeros when
        there is none), both (B, C, h, w)."""
        B = x_hat.shape[0]
        C, h, w = self.latent_shape
        s_sym = self._symbol_snr(csi_db.clamp(*SNR_CLIP_DB))  # (B, k) dB
        state = torch.stack([snr_db, csi_db.mean(1), csi_db.amin(1)], dim=1)  # (B, 3)
        e = self.embed(snr_features(state))  # (B, width)
        if self.dense:
            lg = torch.zeros_like(x_hat) if log_gain is None else log_gain  # (B, k)
            # relative power of symbol i (unit average over the k symbols), as the channel's
            # per-sample normalisation sees it: P'_i = g_i^2 lambda_i / mean_j g_j^2 lambda_j
            log_p = 2 * lg + self.log_var
            log_p = log_p - torch.logsumexp(log_p, dim=1, keepdim=True) + math.log(self.k)
            shrink = torch.sigmoid(log_p + s_sym * LN10_OVER_10)  # p snr / (p snr + 1)
            z_lin = self.linear(x_hat * (-lg).exp() * shrink).reshape(B, C, h, w)
        else:
            z_lin = torch.zeros(B, C, h, w, dtype=x_hat.dtype, device=x_hat.device)
        n = self.m * self.h2 * self.w2
        maps = F.pad(torch.stack([x_hat, snr_features(s_sym)], 1), (0, n - self.k))  # (B, 2, n)
        u = self.stem(maps.reshape(B, 2 * self.m, self.h2, self.w2))  # (B, width, h', w')
        for block in self.blocks:
            u = block(u, e)
        for up in self.up:
            u = up(F.gelu(F.interpolate(u, scale_factor=2.0, mode="nearest")))  # doubles h, w
        u = self.merge(torch.cat([F.gelu(u), z_lin], dim=1))  # (B, width, h, w)
        u = self.refine(u, e)
        r = self.head(F.gelu(u))  # (B, C, h, w) the non-linear correction
        if self.gate == "posterior":
            # along sent component i, keep the share 1 - shrink_i of the correction: the LMMSE
            # posterior variance there is lambda_i (1 - shrink_i), so at high SNR the reliably
            # received components stay the linear code's, and the correction goes to the
            # components not sent and to the noisy ones
            coef = r.flatten(1) @ self.basis  # (B, k)
            r = r - ((coef * shrink) @ self.basis.T).reshape(B, C, h, w)
        return z_lin + r, z_lin

    @torch.no_grad()
    def init_linear(self, mean: torch.Tensor, eigvecs: torch.Tensor, eigvals: torch.Tensor) -> None:
        """Dense path := inverse KLT z = mu + U_r c, prior variances lambda_i of the r components
        (the remaining k - r symbols get a tiny prior: they carry nothing yet)."""
        if not self.dense:
            return
        r = min(eigvecs.shape[1], self.k)
        self.linear.weight.zero_()
        self.linear.weight[:, :r] = eigvecs[:, :r].to(self.linear.weight)
        self.linear.bias.copy_(mean.to(self.linear.bias))
        self.log_var.fill_(math.log(1e-6))
        self.log_var[:r] = eigvals[:r].clamp_min(1e-12).log().to(self.log_var)
        if self.gate == "posterior":
            self.basis.zero_()
            self.basis[:, :r] = eigvecs[:, :r].to(self.basis)


@dataclasses.dataclass
class AdaptiveSettings:
    """``codec.adaptive.*``: the adaptive codec's layout and its training options."""

    width: int = 64  # channels of the conv trunks
    blocks: int = 2  # FiLM residual blocks per trunk
    skip: str = "auto"  # dense KLT-initialised linear path: auto (|z| <= 4096) | dense | none
    linear_init: bool = True  # start the dense path at the KLT of the training latents
    gate: str = "none"  # none | posterior (the decoder's correction along each sent KLT component
    # is scaled by that component's LMMSE posterior variance share, 1 - shrink)
    dense_aux: float = 0.0  # weight of a second loss term on the dense (linear) path alone
    freeze_dense: bool = False  # keep the dense path at the KLT fitted by linear_init (its per-SNR
    # power loading stays trained)

    def validate(self, prefix: str) -> None:
        for key, ok, expected in (
                ("width", self.width > 0, "a positive integer"),
                ("blocks", self.blocks >= 0, "an integer >= 0"),
                ("skip", self.skip in SKIPS, f"one of {', '.join(SKIPS)}"),
                ("gate", self.gate in GATES, f"one of {', '.join(GATES)}"),
                ("dense_aux", math.isfinite(self.dense_aux) and self.dense_aux >= 0,
                 "a number >= 0")):
            if not ok:
                raise ConfigError(f"{prefix}.{key}", getattr(self, key), expected)


@ARCHS.register("adaptive")
class Adaptive(CodecArch):
    """The SNR-adaptive, CSI-aware codec: :class:`AdaptiveEncoder`, :class:`AdaptiveDecoder`."""

    Settings = AdaptiveSettings
    adaptive = True
    order = 2

    @classmethod
    def build(cls, latent_shape, k, settings):
        kw = dict(width=settings.width, blocks=settings.blocks, skip=settings.skip)
        return (AdaptiveEncoder(latent_shape, k, **kw),
                AdaptiveDecoder(latent_shape, k, gate=settings.gate, **kw))
