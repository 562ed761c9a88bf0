"""The package's shape: its layers and the absence of import circles (import-linter contracts in
pyproject.toml, imports inside functions included), imports at the top of files, and the
registries as the only lists of channel models, codec architectures and schemes."""

from __future__ import annotations

import ast
import math
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from conftest import REPO

SRC = REPO / "src" / "meg_lightning"

# one xdist worker runs the whole module, so the documented members are set up once
pytestmark = pytest.mark.xdist_group("architecture")


def test_the_import_contracts_hold():
    """lint-imports: no module imports a higher layer, no circle among sibling modules."""
    exe = Path(sys.executable).with_name("lint-imports")
    out = subprocess.run([str(exe), "--no-cache"], cwd=REPO, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "2 kept, 0 broken" in out.stdout


def _deferred_imports(path: Path) -> list[tuple[int, str]]:
    """Imports inside functions or classes that do not say why they are deferred."""
    source = path.read_text()
    lines = source.splitlines()
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(node):
                if isinstance(inner, (ast.Import, ast.ImportFrom)):
                    line = lines[inner.lineno - 1]
                    if "PLC0415" not in line:
                        found.append((inner.lineno, line.strip()))
    return found


def test_imports_sit_at_the_top_of_files_unless_a_comment_says_why():
    offenders = {str(p.relative_to(SRC)): _deferred_imports(p) for p in SRC.rglob("*.py")}
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, offenders


def test_no_consumer_keeps_a_list_of_channel_kinds():
    """The channel kinds are the registry's: no module checks a name against a list of them or
    spells that list in a message (the choices come from CHANNELS; a default value is config)."""
    pattern = re.compile(r"in \([\"']awgn[\"'],|awgn, rayleigh, none|\(\"awgn\", \"rayleigh\", \"none\"\)")
    hits = [str(p.relative_to(SRC)) for p in SRC.rglob("*.py") if pattern.search(p.read_text())]
    assert hits == [], hits


DOC = REPO / "docs" / "ARCHITECTURE.md"


@pytest.fixture(scope="module")
def documented_members():
    """Run every Python block of docs/ARCHITECTURE.md in one module (in order, as a reader
    would); yield its namespace; unregister what it registered."""
    from meg_lightning.channels import CHANNELS
    from meg_lightning.codecs import ARCHS
    from meg_lightning.power import POLICIES
    from meg_lightning.schemes import SCHEMES

    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert len(blocks) >= 6
    module = types.ModuleType("architecture_examples")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    try:
        for block in blocks:
            exec(compile(block, str(DOC), "exec"), module.__dict__)
        yield module.__dict__
    finally:
        for registry, name in ((CHANNELS, "rician"), (SCHEMES, "repetition"),
                               (ARCHS, "affine"), (POLICIES, "inversion")):
            registry.unregister(name)
        sys.modules.pop(module.__name__, None)


def test_the_documented_channel_is_a_config_choice_with_the_promised_statistics(
        documented_members, make_cfg):
    from meg_lightning.channels import build, kinds
    from meg_lightning.errors import ConfigError

    assert "rician" in kinds()
    link = build(make_cfg("channel.kind=rician", "channel.num_blocks=4"))
    h = link.draw_gains(20000, 32, torch.Generator().manual_seed(0))
    k = link.settings.k_factor
    assert float(h.abs().pow(2).mean()) == pytest.approx(1.0, abs=0.02)  # E|h|^2 = 1
    assert float(h.real.mean()) == pytest.approx(math.sqrt(k / (k + 1)), abs=0.01)  # the LOS part
    with pytest.raises(ConfigError, match="channel.rician.k_factor=-1.0: expected a number >= 0"):
        make_cfg("channel.kind=rician", "channel.rician.k_factor=-1")
    assert make_cfg("eval.channels=[awgn,rician]").eval.channels == ["awgn", "rician"]


def test_the_documented_scheme_runs_in_the_sweep_and_halves_the_noise(documented_members,
                                                                       make_cfg, tiny_pipe):
    from meg_lightning.data.datamodule import TensorLatentDataModule
    from meg_lightning.evaluation.sweep import run_sweep
    from meg_lightning.schemes import names

    assert {"repetition", "repetition+dm"} <= set(names())
    cfg = make_cfg("eval.schemes=[feature,repetition]", "eval.channels=[awgn]",
                   "eval.snrs_db=[0]", "eval.num_images=16", "eval.bootstrap=0",
                   "eval.fid_features=pixels")
    dm = TensorLatentDataModule(torch.randn(160, 4, 8, 8), test_fraction=0.1)
    rows = {r["scheme"]: r for r in run_sweep(cfg, datamodule=dm, vae=tiny_pipe.vae,
                                               progress=False).rows}
    assert rows["repetition"]["symbols"] == 2 * rows["feature"]["symbols"] == 512
    # twice the symbols at the same SNR per symbol, averaged: half the noise on the latent
    ratio = rows["repetition"]["latent_mse"] / rows["feature"]["latent_mse"]
    assert ratio == pytest.approx(0.5, rel=0.15)
    assert rows["repetition"]["opta_latent_mse"] is not None  # an analog code: the bound is there


def test_the_documented_codec_trains_and_loads(documented_members, make_cfg, tmp_path):
    from meg_lightning.codecs import load_codec
    from meg_lightning.codecs.train import main as train_codec
    from meg_lightning.data.datamodule import TensorLatentDataModule

    cfg = make_cfg("codec.arch=affine", "codec.affine.bias=false", "codec.fc=0.25",
                   "trainer.max_epochs=1", "trainer.enable_progress_bar=false",
                   "trainer.enable_model_summary=false", f"out_dir={tmp_path}")
    best = train_codec(cfg, datamodule=TensorLatentDataModule(torch.randn(32, 4, 8, 8),
                                                              batch_size=8))
    codec = load_codec(best)
    assert codec.codec_cfg.arch == "affine" and codec.decoder.linear.bias is None
    assert codec.encode(torch.randn(2, 4, 8, 8)).shape == (2, 64)
