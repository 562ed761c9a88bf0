"""`meg eval`: the resumable sweep schemes x channel kinds x SNRs (x fc) on the test latents.

For every cell (scheme, channel, SNR, fc) the sweep sends the first ``eval.num_images`` test latents
(the same images in every cell) through the scheme and compares the UE's images I_g with the
perfect images I_0 = D(z) (paper Sec. II-C):

- ``psnr_db``: mean over images of the per-image PSNR (eqs. 6-7), each capped at
  ``psnr_cap_db``; ``psnr_capped`` counts the images at the cap (identical to I_0);
- ``fid`` (eq. 8) over the ``fid_n_images`` pairs, with a paired bootstrap interval
  ``[fid_ci_low, fid_ci_high]`` and the extractor in ``fid_features`` (``inception`` is the
  paper's FID; ``pixel-FID`` is an offline stand-in, not comparable);
- ``lpips`` (lower is better): mean over images of LPIPS(I_g, I_0), with ``lpips_std`` and the
  backbone in ``lpips_net`` (``alex``: torchvision's ImageNet AlexNet with LPIPS v0.1's layers);
- ``clip_score`` (higher is better): mean over images of max(100 cos(E_I, E_C), 0) between the UE
  image and its prompt, with ``clip_score_std``, the same mean for I_0 in ``clip_score_ref`` and
  the CLIP model in ``clip_model``. LPIPS and CLIP score need their weights locally
  (:mod:`meg_lightning.metrics.lpips`, :mod:`meg_lightning.metrics.clip_score`:
  ``MEG_LPIPS_WEIGHTS``, ``MEG_CLIP_MODEL``); without them their columns are nan / empty and the
  sweep warns once, in one line each, how to provide them (never a stand-in);
- ``semantic_accuracy`` (model ``mini`` or an injected judge): the share of UE images whose
  attributes *all* still match their prompt, judged by the mini model's shipped classifier
  (:func:`meg_lightning.mini.classifier.all_match`); ``semantic_accuracy_ref`` is the same
  share for I_0 (the ceiling); nan for models without a judge;
- ``latent_nmse`` / ``latent_mse`` of z_hat against z (latent schemes only) and, on AWGN,
  ``opta_latent_mse``: the Gaussian OPTA bound for the same symbol budget and the training
  latents' covariance (no scheme can beat it on a Gaussian source with that covariance; nan
  unless there are more training latents than |z|, as the sample covariance is singular then);
- ``symbols``: real channel symbols per image (``channel_uses`` = complex uses = symbols / 2).

Outputs under ``{out_dir}/eval/``: ``results.csv`` (tidy, one row per cell; the name is
``eval.results``), ``results.json`` (rows + resolved config), ``config.yaml`` and
``examples/`` (the first ``EXAMPLES`` test images of every cell side by side in one PNG, and of
I_0 in ``reference.png``, for Fig. 5 and the image grids). After each cell the CSV and
JSON are rewritten atomically, so an interrupted sweep resumes where it stopped: a cell whose key is
already in the CSV with the same ``config_hash`` is skipped. The hash covers every setting that
changes a cell's numbers (model, data, channel blocks/equaliser, eval settings) but not the lists
being swept, so widening the sweep reuses the cells already done. Rows of another hash are moved
to ``results.stale-<hash>.csv``. A `meg` row also records ``codec_id``, a fingerprint of its codec
checkpoint: after retraining a codec its cells are recomputed.

The perfect images I_0 are decoded once, batch by batch, into an anonymous scratch file
(:class:`ImageStore`) and read back per batch in every cell: at 512x512 they are 3 MB each, and
the sweep's memory must not grow with ``eval.num_images`` (docs/PAPER_SCALE.md).

Every cell draws its channel noise from its own generator seeded by (seed, cell key), so a cell's
numbers do not depend on which other cells ran before it. One cell's metrics and example images
are computed by :func:`.cell_metrics.run_cell`, its compute columns by :mod:`.compute`.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import Tensor
from tqdm.auto import tqdm

from meg_lightning.channels import CHANNELS
from meg_lightning.codecs import opta_mse
from meg_lightning.codecs.base import code_length
from meg_lightning.config import MegConfig, save_resolved, to_dict
from meg_lightning.errors import ConfigError
from meg_lightning.evaluation.cell_metrics import EXAMPLES, run_cell, save_png
from meg_lightning.evaluation.cells import (
    cell_seed,
    codec_ids,
    enumerate_cells,
    rate_key,
    row_codec_id,
    sweep_hash,
)
from meg_lightning.evaluation.compute import cell_compute_columns, sweep_compute_parts
from meg_lightning.evaluation.inputs import (
    ImageStore,
    _default_datamodule,
    _default_judge,
    _default_vae,
    _device,
    check_num_images,
    default_channel,
    image_decoder,
    injected_codecs,
    judge_batch,
    latent_spectrum,
    scheme_context,
    test_latents,
    warn_few_latents,  # noqa: F401 - importable from here (tests)
)
from meg_lightning.evaluation.report import log_to_wandb
from meg_lightning.evaluation.results import COLUMNS, read_results, rows_to_csv
from meg_lightning.io import atomic_write_json, atomic_write_text, clean_tmp
from meg_lightning.metrics import (
    extract_features,
    make_clip_score,
    make_feature_extractor,
    make_lpips,
)
from meg_lightning.mini.classifier import domain_features
from meg_lightning.schemes import BuildContext, Scheme, build, runs_generator, scheme_class


def opta_applies(cell) -> bool:
    """Rows of analog latent codes on a noisy channel without fading (AWGN) get the Gaussian
    OPTA bound (it is an AWGN bound)."""
    link = CHANNELS[cell.channel]
    return scheme_class(cell.scheme).analog and not (link.fading or link.noiseless)


def eval_dir(cfg: MegConfig) -> Path:
    return Path(cfg.out_dir) / "eval"


@dataclass
class SweepResult:
    rows: list[dict]  # every row of the results file (this run's and resumed ones)
    computed: list[str]  # keys of the cells computed by this run
    skipped: list[str]  # keys of the cells found finished
    csv_path: Path


def _build_schemes(cells, ctx: BuildContext) -> dict[tuple[str, Optional[float], str], Scheme]:
    """One scheme instance per (scheme, fc, channel kind) of ``cells``, from the registry."""
    schemes: dict[tuple[str, Optional[float], str], Scheme] = {}
    for c in cells:
        sk = (c.scheme, c.fc, c.channel)
        if sk not in schemes:
            schemes[sk] = build(c.scheme, ctx, c.fc)
    return schemes


def check_rates(cfg: MegConfig, cells, numel: int) -> None:
    """Every swept rate gives a code of at least one symbol, k = round(fc |z|) >= 1; else a
    one-line ConfigError naming the key the rate came from (``eval.fcs`` or
    ``eval.scheme_fcs.<scheme>``), before anything is written."""
    for c in cells:
        if c.fc is None:
            continue
        try:
            code_length(c.fc, numel)
        except ConfigError:
            raise ConfigError(rate_key(cfg, c.scheme), c.fc,
                              f"a rate giving {c.scheme} at least one symbol: k = round(fc x "
                              f"|z|) >= 1 for |z| = {numel}, i.e. fc >= {0.5 / numel:.3g}"
                              ) from None


def run_sweep(cfg: MegConfig, *, datamodule=None, vae=None,
              decode_image: Optional[Callable[[Tensor], Tensor]] = None,
              codecs: Optional[dict[Any, Any]] = None,
              linear_codes: Optional[dict[float, Any]] = None,
              feature_extractor=None,
              channel_factory: Optional[Callable[[str, float], Any]] = None,
              judge: Optional[Callable[[Tensor, Tensor], Tensor]] = None,
              pipeline=None, prompts: Optional[list[str]] = None,
              lpips=None, clip_score=None,
              progress: bool = True) -> SweepResult:
    """Run (or resume) the sweep of ``cfg.eval``; see the module docstring for the outputs.

    Everything the sweep needs can be injected; by default it is built from ``cfg``:
    ``datamodule`` (:func:`meg_lightning.data.build_datamodule`), ``vae`` (the pipeline's VAE) or
    directly ``decode_image`` (z -> images in [0, 1]), ``codecs`` (fc, or (learned folder, fc),
    -> module with ``encode``/``decode``; a bare fc is the ``codec`` folder of `meg`; default
    :func:`meg_lightning.codecs.store.load_learned_codec`), ``linear_codes`` (fc -> module),
    ``feature_extractor`` (``eval.fid_features``), ``channel_factory(kind, snr_db)``, ``judge``
    ((images, cache indices) -> (b,) bool, for semantic accuracy; by default the mini model's
    classifier when ``model=mini``, else none), ``pipeline`` (the diffusers pipeline that the
    generative receivers ``X+dm`` run at the UE; loaded only for them) and ``prompts`` (the
    prompt of every cache index, which ``X+dm`` and ``prompt`` send, and against which CLIP
    score is measured; default ``data.prompts``, the prompts the latent cache was built from),
    ``lpips`` ((images, I_0) -> (b,), :class:`meg_lightning.metrics.LPIPS`; default
    :func:`meg_lightning.metrics.make_lpips`) and ``clip_score``
    (:class:`meg_lightning.metrics.ClipScorer`; default
    :func:`meg_lightning.metrics.make_clip_score`): both None, with a warning, when their
    weights are not present locally.
    """
    out = eval_dir(cfg)
    csv_path = out / cfg.eval.results
    h = sweep_hash(cfg)

    # Resume: keep the rows of this hash, set the others aside (written below, after every check)
    rows: list[dict] = []
    stale: list[dict] = []
    if csv_path.exists():
        if not csv_path.is_file():
            raise ConfigError("eval.results", cfg.eval.results,
                              f"a file name ({str(csv_path)!r} is not a file)")
        old = read_results(csv_path)
        rows = [r for r in old if r.get("config_hash") == h]
        stale = [r for r in old if r.get("config_hash") != h]
    injected = injected_codecs(codecs)
    ids = codec_ids(cfg, injected)
    # a meg / meg-adaptive row made with another codec than the one now configured is recomputed
    kept = [r for r in rows if (want := row_codec_id(ids, r["scheme"], r.get("fc"))) is None
            or r.get("codec_id") == want]
    changed = bool(stale) or len(kept) != len(rows)
    rows = kept
    done = {r["cell"] for r in rows}
    cells = enumerate_cells(cfg)
    todo = [c for c in cells if c.key not in done]
    result = SweepResult(rows=rows, computed=[], skipped=[c.key for c in cells if c.key in done],
                         csv_path=csv_path)
    if not todo and not changed:
        return result  # finished: a rerun writes nothing

    # Create the data, the decoder D, the FID extractor and the schemes: every input is checked
    # (cache, weights, codec checkpoints) before the first file is written
    device = _device(cfg)
    dm = datamodule if datamodule is not None else _default_datamodule(cfg) if todo else None
    latent_shape = tuple(dm.latent_shape) if dm is not None else ()
    if todo:
        check_rates(cfg, todo, math.prod(latent_shape))
    if todo and decode_image is None:
        decode_image = image_decoder(cfg, device,
                                     vae if vae is not None else _default_vae(cfg, device))

    cache: dict[str, Any] = {}
    ctx, all_prompts = scheme_context(cfg, dm, device, decode_image, codecs=injected,
                                      linear_codes=linear_codes, pipeline=pipeline,
                                      prompts=prompts)
    z_train = ctx.z_train
    schemes = _build_schemes(todo, ctx) if todo else {}

    def compute_parts():
        """Per-image GFLOPs of the generator's components (evaluation.compute)."""
        if "parts" not in cache:
            cache["parts"] = sweep_compute_parts(cfg, todo, ctx)
        return cache["parts"]

    if todo:
        extractor = (feature_extractor if feature_extractor is not None
                     else make_feature_extractor(cfg.eval.fid_features,
                                       domain_features(cfg.model, cfg.eval.fid_features))).to(device).eval()
        n = check_num_images(cfg, len(dm.dataset("test")))
        z, index = test_latents(dm, n)
        # LPIPS and CLIP score: real weights or nothing (None after one warning line each)
        lpips = lpips if lpips is not None else make_lpips()
        lpips = lpips.to(device).eval() if lpips is not None else None
        clip = clip_score if clip_score is not None else make_clip_score()
        clip = clip.to(device).eval() if clip is not None else None

    # Write: the resolved config, the rows set aside, then every cell as it finishes
    out.mkdir(parents=True, exist_ok=True)
    clean_tmp(out)
    clean_tmp(out / "examples")
    save_resolved(cfg, out)
    if stale:
        hashes = sorted({str(r.get("config_hash")) for r in stale})
        dest = out / f"{csv_path.stem}.stale-{'-'.join(hashes)}.csv"
        atomic_write_text(dest, rows_to_csv(stale))
        warnings.warn(f"{len(stale)} rows in {csv_path} came from another configuration "
                      f"(hash {', '.join(hashes)} != {h}); moved to {dest}", stacklevel=2)
    if not todo:
        _write(cfg, out, csv_path, rows, h)
        return result

    bs = cfg.eval.batch_size
    judge = judge if judge is not None else _default_judge(cfg, extractor)
    # the perfect images I_0 (N, 3, H, W) go to a scratch file batch by batch: at 512x512 they are
    # 3 MB each, and memory must not grow with eval.num_images
    i_0 = ImageStore(out)
    feats_0, sem_0, clip_0 = [], [], []
    # each test image's prompt, encoded once for CLIP score (the cache's sample i is prompt i)
    text_emb = (clip.encode_text([all_prompts()[int(i)] for i in index])
                if clip is not None else None)
    for s in range(0, len(z), bs):
        ib = decode_image(z[s:s + bs].to(device)).float().cpu()  # (b, 3, H, W)
        i_0.append(ib)
        feats_0.append(extract_features(extractor, ib.to(device)))
        if judge is not None:
            sem_0.append(judge_batch(judge, ib, index[s:s + bs], extractor, feats_0[-1]))
        if clip is not None:
            clip_0.append(clip.score(clip.encode_images(ib.to(device)),
                                     text_emb[s:s + bs]).double().cpu())
    feats_0 = torch.cat(feats_0)
    clip_ref = float(torch.cat(clip_0).mean()) if clip_0 else float("nan")
    save_png(out / "examples" / "reference.png", i_0[:EXAMPLES])
    sem_ref = float(torch.cat(sem_0).float().mean()) if sem_0 else float("nan")
    atomic_write_json(out / "examples" / "index.json", {"example_index": int(index[0]),
                                                        "test_indices": index.tolist()})
    channel_factory = channel_factory or (lambda kind, snr: default_channel(cfg, kind, snr))
    test_prompts = ([all_prompts()[int(i)] for i in index]
                    if any(runs_generator(c.scheme) for c in todo) else None)

    def opta(symbols: int, snr_db: float) -> float:
        """Gaussian OPTA latent MSE for this symbol budget on AWGN (codec.opta_mse), or nan when
        there are fewer training latents than |z|: the sample covariance then has |z| - N + 1 zero
        eigenvalues and the "bound" would be far below what any scheme reaches on new latents."""
        numel = math.prod(latent_shape)
        if len(z_train()) <= numel:
            return float("nan")
        if "spectrum" not in cache:
            cache["spectrum"] = latent_spectrum(z_train())
        return float(opta_mse(cache["spectrum"], min(1.0, symbols / numel), snr_db))

    # Run the cells, rewriting the results after each one
    bar = tqdm(todo, desc="meg eval", unit="cell", disable=not progress)
    try:  # closed before an interrupt propagates (see power.train)
        for cell in bar:
            bar.set_postfix_str(cell.key)
            t0 = time.perf_counter()
            seed = cell_seed(cfg.seed, cell.key)
            scheme = schemes[(cell.scheme, cell.fc, cell.channel)]
            metrics, first = run_cell(cell, scheme, channel_factory(cell.channel, cell.snr_db),
                                      z, i_0, feats_0,
                                      extractor=extractor, batch_size=bs, seed=seed,
                                      bootstrap=cfg.eval.bootstrap, device=device, index=index,
                                      judge=judge, prompts=test_prompts,
                                      lpips=lpips, clip=clip, text_emb=text_emb)
            metrics["semantic_accuracy_ref"] = sem_ref
            metrics["clip_score_ref"] = clip_ref
            metrics.update(cell_compute_columns(cell, metrics, scheme, compute_parts()))
            if opta_applies(cell):
                metrics["opta_latent_mse"] = opta(metrics["symbols"], cell.snr_db)
            row = {"cell": cell.key, "scheme": cell.scheme, "channel": cell.channel,
                   "snr_db": cell.snr_db, "fc": cell.fc, "num_blocks": cfg.channel.num_blocks,
                   "equalizer": cfg.channel.equalizer, "seed": seed, "config_hash": h,
                   "codec_id": row_codec_id(ids, cell.scheme, cell.fc), **metrics,
                   "time_s": round(time.perf_counter() - t0, 3)}
            save_png(out / "examples" / f"{cell.key}.png", first)
            rows.append(row)
            result.computed.append(cell.key)
            _write(cfg, out, csv_path, rows, h)
    finally:
        bar.close()
    return result


def _write(cfg: MegConfig, out: Path, csv_path: Path, rows: list[dict], h: str) -> None:
    atomic_write_text(csv_path, rows_to_csv(rows))
    atomic_write_json(csv_path.with_suffix(".json"),
                      {"config_hash": h, "columns": COLUMNS, "rows": rows, "config": to_dict(cfg)})


def main(cfg: MegConfig) -> SweepResult:
    """`meg eval`: run / resume the sweep, print where the results are, log them (``cfg.logger``)."""
    res = run_sweep(cfg)
    if not res.computed:
        print(f"meg eval: all {len(res.skipped)} cells are already in {res.csv_path} "
              "(nothing to do)")
        return res
    print(f"meg eval: {len(res.computed)} cells computed, {len(res.skipped)} resumed -> "
          f"{res.csv_path}")
    if cfg.logger == "wandb":
        log_to_wandb(cfg, res.rows, eval_dir(cfg))
    return res
