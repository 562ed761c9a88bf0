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


#: the longest tests of the default run (`--durations`), longest first: run first, so that the two
#: workers share them and the run does not end waiting on one of them (names that no longer exist
#: cost nothing; docs/BENCHMARKS.md has the profile)
LONGEST_FIRST = (
    "test_demo.py::test_demo_runs_every_stage_and_writes_the_report",
    "test_golden.py::test_the_fixed_tiny_evaluation_is_bit_identical",
    "test_paper_scale.py::test_sweep_memory_is_flat_in_the_number_of_images",
    "test_paper_scale.py::test_gpu_check_runs_in_its_reduced_cpu_mode",
    "test_cache.py::test_two_processes_equal_one",
    "test_pretrained.py::test_the_recipe_reproduces_a_shipped_codec_on_a_small_budget",
    "test_cache.py::test_sigkill_midrun_then_resume_equals_uninterrupted",
    "test_mini.py::test_training_smoke_run_saves_a_loadable_pipeline",
    "test_evaluation.py::test_figures_from_a_synthetic_results_csv",
    "test_codec.py::test_ddp_two_cpu_processes",
    "test_mini.py::test_the_seed_decides_what_the_caption_does_not",
    "test_hardening.py::test_sigterm_in_a_real_process_exits_130_and_resumes",
    "test_figures.py::test_every_figure_of_meg_figures_passes_the_checks",
)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    key = {id(it): rank.get(it.nodeid.split("/")[-1].split("[")[0], len(rank)) for it in items}
    items.sort(key=lambda it: key[id(it)])  # stable: the others keep their order
