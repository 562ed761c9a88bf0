"""The on-disk latent cache (paper Algorithm 2, step 1: "generate the latent feature data set").

Layout of ``data.cache_dir``::
    settings.json        everything that changes a latent (model, generation settings, base seed,
                         shard size); a cache made with other settings is refused, never mixed
    shard-00000.npy      latents z of samples [0, S), float32 (S, C, h, w), memory-mapped on read
    shard-00000.json     sidecar: start, count, sha256 of the .npy, and per sample its index,
                         prompt and seed; written after the .npy, so it marks the shard complete
    manifest.json        the merged index of all complete shards (derived from the sidecars)
    config.yaml          the resolved config of the last `meg latents` run

Sample i uses the seed ``seed_for(seed, i)`` and prompt i of the prompt source, so any sample can
be regenerated alone and the result does not depend on the batch size (up to float reduction
order) or on how many processes generate. Every file is written atomically (temp file + rename):
an interrupted run loses at most the shard it was writing, and the next run resumes there.
Processes split the missing shards round-robin (Lightning Fabric ``devices=N``) and rank 0 merges
the sidecars into the manifest.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from lightning.fabric import Fabric
from tqdm.auto import tqdm

from meg_lightning.config import MegConfig, save_resolved
from meg_lightning.data.prompts import get_prompts
from meg_lightning.errors import UserError
from meg_lightning.generation import (
    generate_latents,
    latent_shape,
    load_pipeline,
    model_id,
    seed_for,
)
from meg_lightning.io import atomic_path, atomic_write_json, clean_tmp

CACHE_VERSION = 1


def cache_settings(cfg: MegConfig) -> dict:
    """The settings that determine every latent in the cache."""

    gen = asdict(cfg.generation)
    gen.pop("device")  # where it ran does not define the latent (up to float tolerance)
    return {"version": CACHE_VERSION, "model": model_id(cfg.model), "generation": gen,
            "seed": cfg.seed, "shard_size": cfg.data.shard_size}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _diff(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k}: cache has {va!r}, asked for {vb!r}")
    return out


def _read_json(path: Path, what: str):
    """A JSON file of the cache; one-line UserError when it is not readable JSON."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise UserError(f"corrupt {what} {str(path)!r} (not valid JSON): delete it (and, for a "
                        "shard sidecar, its .npy), then rerun `meg latents`") from None


class LatentCache:
    """Read / write access to one cache folder for one config."""

    def __init__(self, cfg: MegConfig):
        self.cfg = cfg
        self.root = Path(cfg.data.cache_dir)
        self.n = cfg.data.num_prompts
        self.shard_size = cfg.data.shard_size
        self.settings = cache_settings(cfg)

    # -- layout -------------------------------------------------------------------------------
    def shard_path(self, j: int) -> Path:
        return self.root / f"shard-{j:05d}.npy"

    def sidecar_path(self, j: int) -> Path:
        return self.root / f"shard-{j:05d}.json"

    @property
    def num_shards(self) -> int:
        return math.ceil(self.n / self.shard_size)

    def shard_range(self, j: int) -> range:
        return range(j * self.shard_size, min((j + 1) * self.shard_size, self.n))

    # -- settings -----------------------------------------------------------------------------
    def check_settings(self, create: bool) -> None:
        """Refuse a cache made with other settings; write settings.json for a new cache."""

        path = self.root / "settings.json"
        if path.exists():
            old = _read_json(path, "settings file")
            diffs = _diff(old, self.settings)
            if diffs:
                raise UserError(f"the latent cache at {str(self.root)!r} was made with other "
                                f"settings ({'; '.join(diffs)}): use another data.cache_dir "
                                f"or delete that folder")
        elif create:
            atomic_write_json(path, self.settings)
        else:
            raise UserError(f"no latent cache at data.cache_dir={str(self.root)!r}: run "
                            f"`meg latents` (or `make latents`) with the same settings first")

    # -- shards -------------------------------------------------------------------------------
    def read_sidecar(self, j: int) -> dict | None:
        p = self.sidecar_path(j)
        meta = _read_json(p, "shard sidecar") if p.exists() else None
        keys = {"count", "sha256", "samples"}
        if meta is not None and not (isinstance(meta, dict) and keys <= set(meta)):
            raise UserError(f"corrupt shard sidecar {str(p)!r} (not the JSON `meg latents` "
                            "writes): delete it and its .npy, then rerun `meg latents`")
        return meta

    def shard_complete(self, j: int, prompts: Sequence[str]) -> bool:
        """True when shard j holds every sample it should for this N (checksum checked)."""

        meta = self.read_sidecar(j)
        rng = self.shard_range(j)
        if meta is None or not self.shard_path(j).exists() or meta["count"] < len(rng):
            return False
        self.verify_shard(j, meta)
        self._check_prompts(j, meta, prompts)
        return True

    def verify_shard(self, j: int, meta: dict) -> None:
        if _sha256(self.shard_path(j)) != meta["sha256"]:
            raise UserError(f"corrupt shard {str(self.shard_path(j))!r} (checksum mismatch): "
                            f"delete it and its .json sidecar, then rerun `meg latents` to "
                            f"regenerate it")

    def _check_prompts(self, j: int, meta: dict, prompts: Sequence[str]) -> None:
        for s in meta["samples"]:
            i = s["index"]
            if i < len(prompts) and s["prompt"] != prompts[i]:
                raise UserError(f"the latent cache at {str(self.root)!r} holds another prompt for "
                                f"sample {i} ({s['prompt']!r}, asked for {prompts[i]!r}): use "
                                f"another data.cache_dir for another prompt source")

    def write_shard(self, j: int, z: torch.Tensor, prompts: Sequence[str],
                    seeds: Sequence[int]) -> None:
        rng = self.shard_range(j)
        arr = z.detach().cpu().float().numpy()
        with atomic_path(self.shard_path(j)) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, arr)
            digest = _sha256(tmp)
        atomic_write_json(self.sidecar_path(j), {
            "start": rng.start, "count": len(rng), "sha256": digest, "shape": list(arr.shape),
            "dtype": str(arr.dtype), "settings": self.settings,
            "samples": [{"index": i, "prompt": p, "seed": int(s)}
                        for i, p, s in zip(rng, prompts, seeds)]})

    def write_manifest(self) -> dict:
        shards, samples = [], []
        j = 0
        while self.sidecar_path(j).exists():
            meta = self.read_sidecar(j)
            shards.append({k: meta[k] for k in ("start", "count", "sha256", "shape", "dtype")}
                          | {"file": self.shard_path(j).name})
            samples += meta["samples"]
            j += 1
        manifest = {"settings": self.settings, "num_samples": len(samples), "shards": shards,
                    "samples": samples}
        atomic_write_json(self.root / "manifest.json", manifest)
        return manifest

    # -- generation -----------------------------------------------------------------------------
    def build(self, rank: int = 0, world_size: int = 1,
              barrier: Callable[[], None] = lambda: None, progress: bool = True) -> list[int]:
        """Generate every missing shard (this process's share of them); returns shards written."""
        # validate everything (prompts, settings, model, image size) before writing anything
        prompts = get_prompts(self.cfg.data.prompts, self.n, self.cfg.data.prompt_column)
        if (self.root / "settings.json").exists():
            self.check_settings(create=False)
        missing = [j for j in range(self.num_shards) if not self.shard_complete(j, prompts)]
        if not missing and (self.root / "manifest.json").is_file():
            return []  # finished: a rerun writes nothing
        mine = missing[rank::world_size]
        if missing:
            pipe = load_pipeline(self.cfg)
            latent_shape(pipe, self.cfg.generation)
        if rank == 0:
            self.root.mkdir(parents=True, exist_ok=True)
            clean_tmp(self.root)
            self.check_settings(create=True)
        barrier()
        if mine:
            total = sum(len(self.shard_range(j)) for j in mine)

            bar = tqdm(total=total, desc=f"latents[{rank}]" if world_size > 1 else "latents",
                       unit="latent", disable=not progress or rank != 0)
            bs = self.cfg.data.gen_batch_size
            for j in mine:
                idx = list(self.shard_range(j))
                chunks = []
                for b in range(0, len(idx), bs):
                    part = idx[b:b + bs]
                    seeds = [seed_for(self.cfg.seed, i) for i in part]
                    chunks.append(generate_latents(pipe, [prompts[i] for i in part], seeds,
                                                   self.cfg.generation))
                    bar.update(len(part))
                self.write_shard(j, torch.cat(chunks), [prompts[i] for i in idx],
                                 [seed_for(self.cfg.seed, i) for i in idx])
            bar.close()
        barrier()
        if rank == 0:
            self.write_manifest()
            save_resolved(self.cfg, self.root)
        return mine

    # -- reading --------------------------------------------------------------------------------
    def open(self) -> "CachedLatents":
        """Memory-map the first N latents; refuses other settings, corrupt or missing shards."""
        self.check_settings(create=False)
        prompts = get_prompts(self.cfg.data.prompts, self.n, self.cfg.data.prompt_column)
        arrays, have = [], 0
        for j in range(self.num_shards):
            meta = self.read_sidecar(j)
            if meta is None or not self.shard_path(j).exists():
                break
            self.verify_shard(j, meta)
            self._check_prompts(j, meta, prompts)
            arrays.append(np.load(self.shard_path(j), mmap_mode="r"))
            have += meta["count"]
        if have < self.n:
            raise UserError(f"the latent cache at {str(self.root)!r} holds {have} of the "
                            f"{self.n} latents asked for (data.num_prompts={self.n}): run "
                            f"`meg latents data.num_prompts={self.n}` with the same settings first")
        return CachedLatents(arrays, self.n, self.shard_size)


class CachedLatents:
    """The first ``n`` latents of a cache, indexed like a tensor (``z[i]``), memory-mapped."""

    def __init__(self, shards: list[np.ndarray], n: int, shard_size: int):
        self.shards, self.n, self.shard_size = shards, n, shard_size

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.n, *self.shards[0].shape[1:])

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        if not 0 <= i < self.n:
            raise IndexError(i)
        row = self.shards[i // self.shard_size][i % self.shard_size]
        return torch.from_numpy(np.array(row, dtype=np.float32))

    def stack(self, indices: Sequence[int] | None = None) -> torch.Tensor:
        indices = range(self.n) if indices is None else indices
        if len(indices) == 0:
            return torch.empty(0, *self.shape[1:])
        return torch.stack([self[int(i)] for i in indices])


def main(cfg: MegConfig) -> Path:
    """`meg latents`: generate (or resume) the cache; ``trainer.devices=N`` splits the work."""

    devices = cfg.trainer.get("devices", 1)
    t0 = time.perf_counter()
    cache = LatentCache(cfg)
    if devices in (1, "1", None):
        written = cache.build()
        rank = 0
    else:
        fabric = Fabric(accelerator=cfg.trainer.get("accelerator", "cpu"), devices=devices,
                        strategy="ddp", num_nodes=cfg.trainer.get("num_nodes", 1))
        fabric.launch()
        rank = fabric.global_rank
        written = cache.build(rank=rank, world_size=fabric.world_size, barrier=fabric.barrier)
    if rank == 0:
        print(summary_line(cache, written, time.perf_counter() - t0))
    return cache.root


def summary_line(cache: LatentCache, written: list[int], seconds: float) -> str:
    """The one line `meg latents` ends with: how many latents of which shape and model, where,
    and the generation time per latent (lower is better), or that there was nothing to do."""
    try:
        shards = json.loads((cache.root / "manifest.json").read_text())["shards"]
        shape = "x".join(str(s) for s in shards[0]["shape"][1:])
        shape = f" of shape {shape}"
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        shape = ""
    head = f"latents: {cache.n} latents{shape} (model={cache.cfg.model}) in {cache.root}"
    if not written:
        return f"{head}; all there already (nothing to do)"
    n_new = sum(len(cache.shard_range(j)) for j in written)
    return (f"{head}; {n_new} generated now by rank 0 in {seconds:.1f} s, "
            f"{seconds / max(n_new, 1):.2f} s per latent (lower is better); "
            f"{len(written)} shard(s); config {cache.root / 'config.yaml'}")
