"""``digital-csit``: the latent digital baseline (KLT quantiser, Sionna 5G LDPC + QAM) with perfect
channel state information at the transmitter, which picks the MCS of each image's codeword(s) from
the fading gains that codeword will see."""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch import Tensor

from meg_lightning.schemes.base import SCHEMES, SchemeOutput, link_snr
from meg_lightning.schemes.digital import LatentDigitalScheme
from meg_lightning.schemes.ldpc import block_sizes, supports


@SCHEMES.register("digital-csit")
class LatentDigitalCSIT(LatentDigitalScheme):
    """``digital-csit``: ``digital`` with perfect CSI at the transmitter, an MCS per image.

    **Assumption**: the transmitter knows, before it encodes an image, the exact complex gains of
    every fading block that image's symbols will cross (perfect CSI at the transmitter, fed back
    without delay, error or cost; with one fading block per image, the usual slow-fading case,
    that is the gain of the current block). The receiver has perfect CSI as in ``digital``. The
    power stays equal over the blocks (no water-filling): only the rate adapts.

    **Choice**: per image, the highest-rate MCS of :data:`~meg_lightning.schemes.ldpc.MCS_TABLE`
    that the realised gains support at its measured AWGN threshold (the SNR at which its codeword
    error rate is :data:`~meg_lightning.schemes.ldpc.TARGET_BLER`, 10%). With one gain per image
    (Rayleigh with ``channel.num_blocks=1``: the image's codeword is one fading block) that is the
    highest MCS whose AWGN threshold is <= the block's instantaneous SNR ``SNR |h|^2``, exactly:
    with perfect CSI at the receiver a codeword of constant gain h is an AWGN codeword at SNR
    ``SNR |h|^2``, so each codeword fails with probability at most about 10% whatever the average
    SNR. With several gains per image (several blocks, TDL) the gains are mapped to one effective
    SNR by the mutual-information effective SNR mapping
    (:func:`~meg_lightning.schemes.ldpc.supports`), the usual link-adaptation abstraction (an
    approximation). When the gains support no MCS (a deep fade) the most robust MCS (the
    lowest-rate one that fits) is sent anyway, as ``digital`` does below its lowest threshold: it
    mostly fails, and the UE shows the mean latent for the lost components.

    On a channel without fading the choice is ``digital``'s (the SNR is all the state there is);
    a forced ``mcs`` is used for every image. The images of a batch are grouped by their MCS, each
    group quantised to its MCS's payload and sent with its own gains. ``info`` as ``digital``
    (per image; ``mcs`` and ``payload_bits`` vary per image, so a cell's row has their mean).
    """

    order = 51
    hue = "yellowgreen"  # beside digital's olive: the same family, told apart
    summary = "5G LDPC + QAM with perfect CSI at the transmitter, an MCS per image"

    def choose_mcs_csit(self, power_gains, snr_db: float) -> np.ndarray:
        """MCS index per realisation of the power gains ``|h|^2`` (batch, groups) at average
        ``snr_db``: the highest feasible MCS they support, else the lowest feasible one."""
        g = np.asarray(power_gains, dtype=np.float64)
        sizes = block_sizes(self.n_complex, g.shape[1])
        out = np.full(g.shape[0], self.feasible[0], dtype=np.int64)
        done = np.zeros(g.shape[0], dtype=bool)
        for m in reversed(self.feasible):
            t = self.threshold_db(m)
            if t is None:
                continue
            ok = supports(m, t, g, sizes, snr_db) & ~done
            out[ok], done = m, done | ok
        return out

    @torch.no_grad()
    def __call__(self, z: Tensor, i_0: Optional[Tensor] = None, *, channel,
                 generator: Optional[torch.Generator] = None, prompts=None,
                 decode: bool = True) -> SchemeOutput:
        snr = link_snr(channel)
        if snr is None or not channel.fading or self.mcs is not None:
            m = self.choose_mcs(snr) if self.mcs is None else self.mcs
            return self._send(z, [(m, torch.arange(z.shape[0]), None)], channel, generator,
                              decode)
        batch = z.shape[0]
        h = channel.draw_gains(batch, self.n_complex, generator, torch.empty(0))  # known at the ES
        chosen = self.choose_mcs_csit(h.abs().pow(2).double().numpy(), snr)
        groups = [(int(m), torch.from_numpy(np.flatnonzero(chosen == m)), None)
                  for m in np.unique(chosen)]
        groups = [(m, idx, h[idx]) for m, idx, _ in groups]
        return self._send(z, groups, channel, generator, decode)

    def _send(self, z: Tensor, groups, channel, generator, decode: bool) -> SchemeOutput:
        """Each group ``(mcs, image indices, gains or None)`` quantised and sent with its MCS."""
        batch = z.shape[0]
        z_hat = torch.empty_like(z)
        info = {k: torch.zeros(batch, dtype=torch.float64)
                for k in ("bler", "mcs", "payload_bits", "success", "codewords")}
        for m, idx, h in groups:
            link = self.link(m, z.device)
            K = link.info_bits
            zi = z[idx.to(z.device)]
            out = link.transmit(self.quantizer.quantise(zi, K), channel=channel,
                                generator=generator, h=h)
            z_hat[idx.to(z.device)] = self.quantizer.dequantise(out.bits_hat, K, erased=out.erased,
                                                                dtype=z.dtype).to(z.device)
            err = out.codeword_error.cpu()
            info["bler"][idx] = err.double().mean(1)
            info["mcs"][idx] = float(m)
            info["payload_bits"][idx] = float(K)
            info["success"][idx] = (~err.any(1)).double()
            info["codewords"][idx] = float(link.num_codewords)
        return SchemeOutput(images=self.decode_image(z_hat) if decode else None,
                            symbols=2 * self.n_complex, z_hat=z_hat, info=info)
