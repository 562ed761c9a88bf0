"""The cells of the sweep (scheme x channel kind x SNR x fc), their keys, seeds, and the hash of
the settings that make a cell's numbers (rows of another hash are not resumed)."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any, Optional

from meg_lightning.channels import CHANNELS
from meg_lightning.codecs.store import codec_source
from meg_lightning.config import MegConfig, config_hash, data_id, to_dict
from meg_lightning.errors import UserError
from meg_lightning.registry import has_settings
from meg_lightning.schemes import SCHEMES, base_name, scheme_class

#: bumped when a change to the schemes or metrics makes earlier rows incomparable (part of the hash)
RESULTS_VERSION = 4


@dataclass(frozen=True)
class Cell:
    """One point of the sweep. ``snr_db`` is inf for the noiseless channel; ``fc`` None when the
    scheme has no compression rate."""

    scheme: str
    channel: str
    snr_db: float
    fc: Optional[float] = None

    @property
    def key(self) -> str:
        """A file-name-safe id, e.g. ``meg_fc0.5_awgn_snr-10``."""
        fc = f"_fc{self.fc:g}" if self.fc is not None else ""
        snr = "inf" if math.isinf(self.snr_db) else f"{self.snr_db:g}"
        return f"{self.scheme}{fc}_{self.channel}_snr{snr}"


def scheme_fcs(cfg: MegConfig, scheme: str) -> list:
    """The rates swept for ``scheme``: ``eval.scheme_fcs[scheme]`` when given, else ``eval.fcs``;
    ``[None]`` for a scheme without a rate."""
    if not scheme_class(scheme).uses_fc:
        return [None]
    return [float(f) for f in cfg.eval.scheme_fcs.get(scheme, cfg.eval.fcs)]


def rate_key(cfg: MegConfig, scheme: str) -> str:
    """The config key the rates of ``scheme`` come from: ``eval.scheme_fcs.<scheme>`` when the
    config has that entry, else ``eval.fcs`` (what an error about one of them names)."""
    return f"eval.scheme_fcs.{scheme}" if scheme in cfg.eval.scheme_fcs else "eval.fcs"


def learned_folders() -> list[str]:
    """The trained-codec folders the registered schemes evaluate (their ``learned``), e.g.
    ``codec`` (the paper's recipe) and ``codec-adaptive``: their rows record the codec's
    fingerprint."""
    return list(dict.fromkeys(cls.learned for _, cls in SCHEMES.items() if cls.learned))


def codec_fcs(cfg: MegConfig, learned: str = "codec") -> list[float]:
    """The rates at which the sweep needs a trained codec of folder ``learned`` (the schemes that
    evaluate it, with or without a generative receiver), ascending."""
    return sorted({fc for s in cfg.eval.schemes if scheme_class(s).learned == learned
                   for fc in scheme_fcs(cfg, s)})


def scheme_channels(cfg: MegConfig, scheme: str) -> list[str]:
    """The channel kinds swept for ``scheme``: ``eval.scheme_channels[scheme]`` when given (e.g.
    the costly generative receivers on AWGN only), else ``eval.channels``."""
    return list(cfg.eval.scheme_channels.get(scheme, cfg.eval.channels))


def enumerate_cells(cfg: MegConfig) -> list[Cell]:
    """All cells of ``cfg.eval`` in sweep order (channel, scheme, fc, SNR). The noiseless channel
    ``none`` has one cell per scheme (SNR = inf)."""
    ev = cfg.eval
    kinds = list(ev.channels)
    kinds += [k for s in ev.schemes for k in scheme_channels(cfg, s) if k not in kinds]
    cells = []
    for kind in kinds:
        snrs = [math.inf] if kind == "none" else [float(s) for s in ev.snrs_db]
        for scheme in ev.schemes:
            if kind not in scheme_channels(cfg, scheme):
                continue
            for fc in scheme_fcs(cfg, scheme):
                cells += [Cell(scheme, kind, snr, fc) for snr in snrs]
    return cells


def sweep_hash(cfg: MegConfig) -> str:
    """Hash of every setting that changes a cell's numbers, except the swept lists themselves and
    the codec checkpoints (each `meg` row carries its checkpoint's ``codec_id`` instead)."""
    d = to_dict(cfg)
    ev = {k: v for k, v in d["eval"].items()
          if k not in ("schemes", "snrs_db", "fcs", "scheme_fcs", "channels", "scheme_channels",
                       "results",
                       "codec_checkpoints", "adaptive_checkpoints", "pretrained")}
    if ev.get("linear_power") == "average":  # the default, as before the key existed: same hash
        del ev["linear_power"]
    channel = {k: d["channel"][k] for k in ("num_blocks", "equalizer")}
    # the own settings of every swept channel model that has some (channel.<kind>.*)
    swept = set(cfg.eval.channels) | {k for v in cfg.eval.scheme_channels.values()
                                      for k in (v if isinstance(v, (list, tuple)) else [v])}
    own = {kind: d["channel"].get(kind) for kind in sorted(swept)
           if kind in CHANNELS and has_settings(CHANNELS[kind])}
    if own:
        channel["models"] = own
    return config_hash({"version": RESULTS_VERSION, "data_id": data_id(cfg), "eval": ev,
                        "channel": channel})


def codec_ids(cfg: MegConfig, injected: Optional[dict[tuple[str, float], Any]] = None
              ) -> dict[tuple[str, float], str]:
    """(learned folder, fc) -> a fingerprint of the codec that evaluates it (checkpoint path,
    size and mtime; ``injected`` for a module passed in). A row whose ``codec_id`` differs is
    recomputed; a (folder, fc) without a checkpoint yet is absent."""
    ids = {}
    for learned in learned_folders():
        for fc in codec_fcs(cfg, learned):
            if injected and (learned, fc) in injected:
                ids[(learned, fc)] = "injected"
                continue
            try:
                path = codec_source(cfg, learned, fc)[0]
            except UserError:
                continue
            if path.is_file():
                st = path.stat()
                blob = f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()
                ids[(learned, fc)] = hashlib.sha256(blob).hexdigest()[:12]
    return ids


def row_codec_id(ids: dict[tuple[str, float], str], scheme: str, fc: Any) -> Optional[str]:
    """The ``codec_id`` a row of ``scheme`` at ``fc`` must carry (None: it uses no codec)."""
    learned = scheme_class(scheme).learned if base_name(scheme) in SCHEMES else None
    if learned is None or fc is None or (isinstance(fc, float) and math.isnan(fc)):
        return None
    return ids.get((learned, float(fc)))


def cell_seed(base_seed: int, key: str) -> int:
    digest = hashlib.sha256(f"meg-eval:{base_seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)
