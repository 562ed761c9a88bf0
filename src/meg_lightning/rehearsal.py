"""Paper-scale dress rehearsal: every stage at SD-v1.5 size on the ``sd15-random`` preset.

``meg rehearsal [rehearsal.out=data/rehearsal] [rehearsal.prompts=10] [rehearsal.steps=2]
[rehearsal.images=2] [rehearsal.threads=0] [rehearsal.shard=0] [rehearsal.only=[<stage>, ...]]``
(``make rehearsal``; :class:`RehearsalConfig`) runs, one after the other, each as its own ``meg``
process so that its peak resident memory is its own (``os.wait4``'s ``ru_maxrss``):

1. ``build``: the SD-v1.5-shaped pipeline with random weights (once; cached, see
   :mod:`meg_lightning.generation.sd15`) and a random-weight Inception-v3 in torch-fidelity's
   layout (once; ``<out>/inception-random.pth``, passed as ``$MEG_INCEPTION_WEIGHTS`` so that
   ``meg eval`` runs the real Inception-FID path at 512x512);
2. ``latents``: half of the prompts, then all of them (the cache resumes: the second run generates
   only the new shard; time and memory against N);
3. ``train-codec``: ``arch=paper`` (563,430,184 parameters) at batch 1 and batch 8, and
   ``arch=mlp``; a few steps each;
4. ``train-ppo``: ``scheme=meg`` with the batch-8 codec (a short run);
5. ``eval``: centralized / feature / meg / linear at one SNR on AWGN, 512x512 decoding,
   Inception-FID, with ``images`` and 4 x ``images`` test images (memory against N);
6. ``figures`` from the larger sweep.

Results: ``<out>/rehearsal.json`` and a Markdown table ``<out>/rehearsal.md`` (seconds and peak
RSS per stage, the machine's load average). A stage that fails stops the rehearsal (exit 1) and
names its log ``<out>/logs/<stage>.log``. Rerunning resumes the latents and rebuilds nothing
that is cached; every other stage runs again (that is what is being measured).
"""

from __future__ import annotations

import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

from meg_lightning.errors import ConfigError
from meg_lightning.io import atomic_path, atomic_write_json, atomic_write_text

GIB = 1024 ** 3
#: the acceptance limits of issue 13
PEAK_RSS_LIMIT_GIB = 20.0
EVAL_GROWTH_LIMIT = 0.10

@dataclass
class RehearsalConfig:
    """``rehearsal.*``: the size of the rehearsal and which stages to run."""

    out: str = "data/rehearsal"  # caches, runs, logs and the report
    prompts: int = 10  # prompts in the latent cache (80% train, 80% test in two splits)
    steps: int = 2  # DDIM steps of generation
    images: int = 2  # test images of the smaller eval (the larger one has 4 x as many)
    threads: int = 0  # OMP threads of every stage (0: the default)
    shard: int = 0  # the cache's shard size (0: prompts / 2)
    only: list[str] = field(default_factory=list)  # rerun these stages only (results in
    # rehearsal-<stages>.json)

    def validate(self, p: str = "rehearsal") -> None:
        for key in ("prompts", "steps", "images"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"{p}.{key}", getattr(self, key), "a positive integer")
        for key in ("threads", "shard"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{p}.{key}", getattr(self, key), "an integer >= 0 (0: the default)")
        # one cache, split per stage (the split is not part of the cache): the codec stages train
        # on 80% (>= 8 latents for batch 8), eval tests on 80% (4 x images) and fits `linear` on
        # the rest
        n, k = self.prompts, self.images
        if n - 2 * int(round(0.1 * n)) < 8 or int(round(0.8 * n)) < 4 * k or k < 2:
            raise ConfigError(f"{p}.prompts", n, f"enough prompts for 8 training latents (80%) "
                              f"and 4 x images={k} test latents (80%), with images >= 2 (FID "
                              "needs 2 per set)")
        names = [st.name for st in plan(self)]
        for name in self.only:
            if name not in names:
                raise ConfigError(f"{p}.only", list(self.only),
                                  f"stage names from {', '.join(names)}")


@dataclass
class Stage:
    name: str
    argv: list[str]
    seconds: float = float("nan")
    peak_rss_gib: float = float("nan")
    returncode: int | None = None
    note: str = ""
    env: dict[str, str] = field(default_factory=dict)
    discard: list[str] = field(default_factory=list)  # outputs deleted after the stage (disk)


def plan(opts: RehearsalConfig) -> list[Stage]:
    """The stages, in order, as ``meg`` command lines."""

    out = Path(opts.out).resolve()
    n, steps, k = opts.prompts, opts.steps, opts.images
    meg = [sys.executable, "-m", "meg_lightning.cli"]
    common = ["model=sd15-random", f"data.cache_dir={out / 'latents'}",
              f"data.shard_size={opts.shard or max(n // 2, 1)}",
              f"generation.num_inference_steps={steps}", "logger=none", "generation.device=cpu"]
    train_split = ["data.val_fraction=0.1", "data.test_fraction=0.1"]
    test_split = ["data.val_fraction=0.0", "data.test_fraction=0.8"]
    runs = out / "runs"
    codec_b8 = runs / "paper-b8" / "codec" / "fc0.5" / "last.ckpt"
    fit = ["trainer.max_epochs=1", "trainer.limit_val_batches=1", "trainer.accelerator=cpu",
           "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]
    inception = out / "inception-random.pth"
    build = [sys.executable, "-c",
             "from meg_lightning.generation.sd15 import ensure_sd15_random; ensure_sd15_random();"
             "from meg_lightning.rehearsal import ensure_random_inception;"
             f"ensure_random_inception({str(inception)!r})"]
    ev = [*test_split, "eval.schemes=[centralized,feature,meg,linear]", "eval.channels=[awgn]",
          "eval.snrs_db=[10]", "eval.fcs=[0.5]", "eval.fid_features=inception",
          "eval.bootstrap=20", "eval.batch_size=1",
          f'eval.codec_checkpoints={{"0.5": "{codec_b8}"}}']
    train = [*common, *train_split, f"data.num_prompts={n}"]
    codec = [*train, "codec.arch=paper", *fit]
    env = {"MEG_INCEPTION_WEIGHTS": str(inception)}
    return [
        Stage("build", build),
        Stage("latents N/2", meg + ["latents", *common, f"data.num_prompts={n // 2}",
                                    "data.gen_batch_size=2"]),
        Stage("latents N", meg + ["latents", *common, f"data.num_prompts={n}",
                                  "data.gen_batch_size=2"]),
        Stage("train-codec paper b1",
              meg + ["train-codec", *codec, "data.batch_size=1", "trainer.limit_train_batches=3",
                     f"out_dir={runs / 'paper-b1'}"],
              # two 6.8 GB checkpoints (weights + Adam state) that no later stage reads
              discard=[str(runs / "paper-b1" / "codec")]),
        Stage("train-codec paper b8",
              meg + ["train-codec", *codec, "data.batch_size=8", "trainer.limit_train_batches=1",
                     f"out_dir={runs / 'paper-b8'}"]),
        Stage("train-codec mlp b8",
              meg + ["train-codec", *train, "codec.arch=mlp", *fit, "data.batch_size=8",
                     "trainer.limit_train_batches=1", f"out_dir={runs / 'mlp-b8'}"]),
        Stage("train-ppo meg",
              meg + ["train-ppo", *train, "ppo.scheme=meg", "ppo.num_envs=8", "ppo.num_blocks=8",
                     "ppo.frames_per_batch=64", "ppo.total_frames=128", "ppo.minibatch_size=32",
                     "ppo.eval_episodes=16", f"out_dir={runs / 'paper-b8'}"]),
        Stage(f"eval {k} images",
              meg + ["eval", *common, f"data.num_prompts={n}", *ev, f"eval.num_images={k}",
                     f"out_dir={runs / 'eval-n1'}"], env=env),
        Stage(f"eval {4 * k} images",
              meg + ["eval", *common, f"data.num_prompts={n}", *ev, f"eval.num_images={4 * k}",
                     f"out_dir={runs / 'eval-n4'}"], env=env),
        Stage("figures", meg + ["figures", *common, *test_split, f"data.num_prompts={n}",
                                f"out_dir={runs / 'eval-n4'}"]),
    ]


def ensure_random_inception(path: str | Path, seed: int = 0) -> Path:
    """torch-fidelity's Inception-v3 FID network with seeded random weights, saved (atomically)
    as the state dict its loader reads (``feature_extractor_weights_path``): the real
    Inception-FID code path runs offline, on features that mean nothing."""


    path = Path(path)
    if path.is_file():
        return path

    class _Unloaded(FeatureExtractorInceptionV3):
        # the parent loads its weights at the end of __init__; here there are none to load
        def load_state_dict(self, state_dict, strict=True, assign=False):
            return None

    torch.manual_seed(seed)
    fake = path.with_suffix(".empty")
    with atomic_path(fake) as tmp:
        torch.save({}, tmp)
        net = _Unloaded("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(tmp))
    fake.unlink(missing_ok=True)
    for m in net.modules():  # the parent has no initialiser: give every layer a sane scale
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight)
        elif isinstance(m, torch.nn.Linear):
            torch.nn.init.normal_(m.weight, std=0.01)
    with atomic_path(path) as tmp:
        torch.save(net.state_dict(), tmp)
    return path


def run_stage(stage: Stage, log: Path, threads: int) -> None:
    """Run one stage as a child process; record its wall time, peak RSS and exit code."""

    env = dict(os.environ, **stage.env, WANDB_MODE="offline", PYTHONUNBUFFERED="1")
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(log, "w") as f:
        f.write(" ".join(stage.argv) + "\n")
        f.flush()
        proc = subprocess.Popen(stage.argv, stdout=f, stderr=subprocess.STDOUT, env=env)
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except KeyboardInterrupt:
            proc.terminate()
            proc.wait()
            raise
        proc.returncode = os.waitstatus_to_exitcode(status)
    stage.seconds = time.perf_counter() - t0
    stage.peak_rss_gib = usage.ru_maxrss * 1024 / GIB  # ru_maxrss is in KiB on Linux
    stage.returncode = proc.returncode


def table(stages: list[Stage]) -> str:
    rows = ["| stage | seconds | peak RSS (GiB) | exit |", "|---|---:|---:|---:|"]
    for s in stages:
        rows.append(f"| {s.name} | {s.seconds:.1f} | {s.peak_rss_gib:.2f} | {s.returncode} |")
    return "\n".join(rows)


def eval_growth(stages: list[Stage]) -> float:
    """Relative growth of ``meg eval``'s peak RSS from ``images`` to 4 x ``images``."""

    ev = [s for s in stages if s.name.startswith("eval ") and s.returncode == 0]
    return ev[1].peak_rss_gib / ev[0].peak_rss_gib - 1 if len(ev) == 2 else None


def main(cfg: Any) -> dict:
    """``meg rehearsal``: run the stages of ``cfg.rehearsal`` (a :class:`RehearsalConfig`);
    returns the report. A failed stage ends the rehearsal with a one-line UserError (exit 1)
    naming its log."""

    opts: RehearsalConfig = getattr(cfg, "rehearsal", cfg)
    out = Path(opts.out)
    stages = plan(opts)
    if opts.only:
        stages = [st for st in stages if st.name in opts.only]
    out.mkdir(parents=True, exist_ok=True)
    if not opts.only:  # every stage but the cached ones is measured afresh
        shutil.rmtree(out / "runs", ignore_errors=True)
    load_before = os.getloadavg()
    for i, st in enumerate(stages, 1):
        print(f"[{i}/{len(stages)}] {st.name} ...", flush=True)
        log = out / "logs" / (st.name.replace(" ", "_").replace("/", "-") + ".log")
        run_stage(st, log, opts.threads)
        print(f"    {st.seconds:.1f} s, peak RSS {st.peak_rss_gib:.2f} GiB, exit {st.returncode}",
              flush=True)
        for p in st.discard:
            shutil.rmtree(p, ignore_errors=True)
        if st.returncode != 0:
            break
    ok = all(s.returncode == 0 for s in stages)
    report = {"options": asdict(opts), "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                           "loadavg_before": load_before,
                                           "loadavg_after": os.getloadavg()},
              "stages": [asdict(s) for s in stages], "ok": ok,
              "max_peak_rss_gib": max(s.peak_rss_gib for s in stages if s.returncode is not None),
              "eval_rss_growth_x4": eval_growth(stages),
              "self_peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB}
    name = ("rehearsal-" + "+".join(x.replace(" ", "_") for x in opts.only) if opts.only
            else "rehearsal")
    atomic_write_json(out / f"{name}.json", report)
    growth = report["eval_rss_growth_x4"]
    md = table(stages)
    if growth is not None:
        md += f"\n\neval peak RSS growth for 4x images: {growth:+.1%}"
    md += f"\n\nload average before / after: {load_before} / {report['machine']['loadavg_after']}\n"
    atomic_write_text(out / f"{name}.md", md)
    print(md)
    if not ok:
        failed = next(s for s in stages if s.returncode not in (0, None))
        raise RuntimeError(f"stage {failed.name!r} failed (exit {failed.returncode}); see "
                           f"{out / 'logs'}")
    return report
