"""`meg bench`: run every script under ``benchmarks/`` with its default (short) settings.

The numbers recorded in ``docs/BENCHMARKS.md`` come from these scripts; each compares against
the obvious alternative in the same run and prints a ratio.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import torch

from meg_lightning.config import MegConfig
from meg_lightning.errors import UserError


def cpu_model() -> str:
    """The CPU's model name (for the machine line every benchmark prints)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine() -> str:
    """One line naming the machine a benchmark ran on."""
    return (f"{os.cpu_count()} CPU cores, {cpu_model()}, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads")


def benchmarks_dir() -> Path:
    d = Path(__file__).resolve().parents[2] / "benchmarks"
    if not d.is_dir():
        raise UserError(f"no benchmarks/ folder at {str(d)!r}: benchmarks run from a source "
                        f"checkout of meg_lightning")
    return d


def main(cfg: MegConfig) -> None:
    scripts = sorted(benchmarks_dir().glob("bench_*.py"))
    failed = []
    for s in scripts:
        print(f"\n## {s.name}\n", flush=True)
        if subprocess.run([sys.executable, str(s)]).returncode != 0:
            failed.append(s.name)
    if failed:
        raise RuntimeError(f"benchmarks failed: {', '.join(failed)}")
