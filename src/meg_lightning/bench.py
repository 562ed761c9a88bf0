"""`meg bench`: run every script under ``benchmarks/`` with its default (short) settings.

The numbers recorded in ``docs/BENCHMARKS.md`` come from these scripts; each compares against
the obvious alternative in the same run and prints a ratio.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from meg_lightning.config import MegConfig
from meg_lightning.errors import UserError


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
