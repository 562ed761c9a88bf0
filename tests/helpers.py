"""Small builders the tests share (not fixtures)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Optional, Sequence

from meg_lightning.codecs import ARCHS, CodecModule
from meg_lightning.registry import settings_of


def codec_module(latent_shape: Sequence[int], channel: Optional[dict] = None, seed: int = 0,
                 data_id: Optional[str] = None, **settings: Any) -> CodecModule:
    """``CodecModule`` from flat keywords: the architecture's own settings (``width=16``) go to
    ``codec.<arch>``, the rest (``fc``, ``arch``, ``loss``, ...) to the ``codec`` section."""
    arch = settings.get("arch", "paper")
    own = {f.name for f in dataclasses.fields(settings_of(ARCHS[arch]))}
    codec = {k: v for k, v in settings.items() if k not in own}
    codec[arch] = {k: v for k, v in settings.items() if k in own}
    return CodecModule(latent_shape, codec=codec, channel=channel, seed=seed, data_id=data_id)


#: prompts in the small shared latent cache of the CLI tests: 4 train / 2 val / 2 test; |z| = 256
N_PROMPTS = 8


def snapshot(root: Path) -> dict[str, Optional[bytes]]:
    """Every path under root -> its bytes (None for a folder)."""
    return {str(p.relative_to(root)): (None if p.is_dir() else p.read_bytes())
            for p in sorted(root.rglob("*"))}


def cli_base(world: Path, out: str = "out") -> list[str]:
    """The settings of a CLI test run on the small shared cache under ``world``."""
    return [f"data.cache_dir={world / 'cache'}", f"out_dir={world / out}", "logger=none",
            "generation.device=cpu", f"data.num_prompts={N_PROMPTS}", "data.shard_size=4",
            "data.val_fraction=0.25", "data.test_fraction=0.25",
            "generation.num_inference_steps=2"]


def assert_refused(capsys: Any, argv: list[str], needle: str, untouched: Path) -> None:
    """``meg argv`` exits 2 with one line on stderr naming ``needle`` and writes nothing at
    ``untouched``."""
    from meg_lightning.cli import run  # noqa: PLC0415 - imports the registries

    code = run(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and needle in err, err
    assert not untouched.exists()
