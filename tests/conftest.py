"""Shared fixtures: the real config composed and shrunk (tiny preset, CPU, no logger)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network
# the CLI processes the tests start: one intra-op thread each (two test workers share the cores;
# a second thread per process only waits for the other worker's, see runtime.torch_threads)
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def make_cfg(tmp_path):
    """``make_cfg("key=value", ...)``: the real composed config, pointed at tmp_path."""
    from meg_lightning.compose import load_config

    def _make(*overrides: str):
        base = [f"data.cache_dir={tmp_path / 'cache'}", f"out_dir={tmp_path / 'runs'}",
                "logger=none", "generation.device=cpu"]
        return load_config(base + list(overrides))

    return _make


@pytest.fixture(scope="session")
def tiny_pipe():
    from meg_lightning.generation.tiny import build_tiny_pipeline

    return build_tiny_pipeline()


@pytest.fixture(autouse=True)
def _seed_and_one_thread():
    """Seed every test; run it on one intra-op thread (tiny models: see runtime.torch_threads)."""
    from meg_lightning.runtime import torch_threads

    torch.manual_seed(0)
    with torch_threads(1):
        yield
