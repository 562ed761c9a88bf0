"""Codec training throughput: Lightning (`CodecModule` + Trainer) vs. a hand-written PyTorch loop.

Both train the same paper-preset codec (|z| = 4x64x64 = 16384, fc = 0.5, Appendix A layout,
563,430,184 parameters) on the same synthetic latents with the same fused Adam and the same
channel, in the same process. Rounds alternate the order (Lightning first, then the loop first)
so that drift in a shared machine's load hits both alike. Each round builds a fresh optimiser;
its first steps (Adam state allocation) are warm-up and not timed.

    python benchmarks/bench_codec.py                   # paper size, batch 1 and 8 (~9 GiB RAM)
    python benchmarks/bench_codec.py --latent 4 8 8    # a quick check of the script itself

Reported: samples/s of each, and the ratio Lightning / loop (1.00 = no overhead).
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import statistics
import time
import warnings

import lightning as L
import torch
from torch.nn import functional as F

from meg_lightning.bench import cpu_model
from meg_lightning.codecs import CodecModule
from meg_lightning.data.datamodule import TensorLatentDataModule


def make_loader(z: torch.Tensor, batch_size: int):
    dm = TensorLatentDataModule(z, batch_size=batch_size, val_fraction=0.0, test_fraction=0.0)
    return dm, dm.train_dataloader()


def time_lightning(model, z: torch.Tensor, batch_size: int, warmup: int, steps: int) -> float:
    """Seconds per step over the timed steps of one Trainer.fit (fetch + step + hooks + logging)."""
    marks: list[float] = []

    class Clock(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == warmup:
                marks.append(time.perf_counter())

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if batch_idx == warmup + steps - 1:
                marks.append(time.perf_counter())

    dm, _ = make_loader(z, batch_size)
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=warmup + steps, max_epochs=-1,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
                        callbacks=[Clock()])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model, datamodule=dm)
    # The module keeps a reference to its Trainer (and so to the optimiser and its Adam state,
    # 4.5 GiB at paper size): drop it so that the next round does not hold two Adam states.
    model.trainer = None
    del trainer
    return (marks[1] - marks[0]) / steps


def time_loop(model, z: torch.Tensor, batch_size: int, warmup: int, steps: int) -> float:
    """Seconds per step of the obvious PyTorch loop over the same module, data and optimiser."""
    _, loader = make_loader(z, batch_size)
    opt = model.configure_optimizers()
    model.train()
    it = iter(loader)
    t0 = 0.0
    for i in range(warmup + steps):
        if i == warmup:
            t0 = time.perf_counter()
        z_b = next(it)["z"]
        g = model._generator(z_b.device, "train", i, 0)  # the same seeded noise as training_step
        loss = F.mse_loss(model(z_b, mode="train", generator=g)["z_hat"], z_b)  # eq. 27
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    t1 = time.perf_counter()
    del opt
    return (t1 - t0) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latent", type=int, nargs=3, default=[4, 64, 64], metavar=("C", "H", "W"),
                    help="latent shape (default: SD-v1.5 at 512x512)")
    ap.add_argument("--fc", type=float, default=0.5, help="compression rate")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per round")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per round")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds per batch size")
    args = ap.parse_args()

    L.seed_everything(0, verbose=False)
    shape = tuple(args.latent)
    t = time.perf_counter()
    model = CodecModule(shape, codec={"fc": args.fc, "arch": "paper"})
    n_params = sum(p.numel() for p in model.parameters())
    print(f"codec {shape} fc={args.fc}: {n_params:,} parameters, built in "
          f"{time.perf_counter() - t:.1f} s")
    n = (args.warmup + args.steps) * max(args.batch_sizes)
    z = torch.randn(n, *shape)

    results: dict[tuple[int, str], list[float]] = {}
    for r in range(args.rounds):
        for b in args.batch_sizes:
            order = ("lightning", "loop") if r % 2 == 0 else ("loop", "lightning")
            for name in order:
                fn = time_lightning if name == "lightning" else time_loop
                sec = fn(model, z, b, args.warmup, args.steps)
                model.zero_grad(set_to_none=True)
                gc.collect()
                results.setdefault((b, name), []).append(sec)
                print(f"  round {r} batch {b:>2} {name:<9}: {sec:.3f} s/step")

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    print()
    print(f"machine: {os.cpu_count()} cores ({cpu_model()}), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, peak RSS {rss:.1f} GiB")
    print(f"{args.rounds} rounds x {args.steps} timed steps (after {args.warmup} warm-up) each")
    print()
    print("| batch | Lightning samples/s | loop samples/s | Lightning / loop |")
    print("|------:|--------------------:|---------------:|-----------------:|")
    for b in args.batch_sizes:
        sl = statistics.mean(results[(b, "lightning")])
        sp = statistics.mean(results[(b, "loop")])
        print(f"| {b:>5} | {b / sl:>19.3f} | {b / sp:>14.3f} | {sp / sl:>16.3f} |")


if __name__ == "__main__":
    main()
