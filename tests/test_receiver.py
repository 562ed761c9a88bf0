"""The `+dm` generative receiver (generation.receiver): the matched step, the schedule, and that
it is the plain decoder when there is no error to remove."""

from __future__ import annotations

import pytest
import torch

from meg_lightning.generation.receiver import denoise, matched_step, step_count


def _sd_alphas_cumprod() -> torch.Tensor:
    from meg_lightning.generation.tiny import sd_ddim_scheduler

    return sd_ddim_scheduler().alphas_cumprod


def test_matched_step_solves_abar_t_equals_one_over_one_plus_sigma2():
    abar = _sd_alphas_cumprod()
    for t in (0, 1, 37, 250, 500, 999):
        sigma2 = float(1 / abar[t] - 1)  # closed form: abar_t = 1 / (1 + sigma_e^2)
        assert int(matched_step(abar, sigma2)) == t
    sigma2 = torch.tensor([0.0, 0.01, 0.1, 1.0, 10.0, 1e4])
    t = matched_step(abar, sigma2)
    assert t[0] == -1  # no error: nothing to denoise
    assert torch.all(t[1:].diff() > 0)  # more error, earlier (noisier) start
    assert t[-1] == 999  # beyond the chain's end: start from its noisiest state
    with pytest.raises(ValueError, match="sigma_e2"):
        matched_step(abar, -0.1)


def test_step_count_follows_the_edge_servers_density_within_the_ue_budget():
    assert step_count(-1, 25, 25, 1000) == 0
    assert step_count(0, 25, 25, 1000) == 1
    assert step_count(999, 25, 25, 1000) == 25
    assert step_count(999, 10, 25, 1000) == 10  # the UE budget caps it
    assert step_count(399, 25, 25, 1000) == 10  # 40% of the chain: 40% of the ES steps


def test_zero_error_is_the_plain_decoder_and_steps_stay_within_the_budget(tiny_pipe):
    g = torch.Generator().manual_seed(0)
    z = torch.randn(4, 4, 8, 8, generator=g)
    prompts = ["a cat", "a dog", "a red fox", "the sea"]
    out, steps = denoise(tiny_pipe, z, prompts, 0.0, ue_steps=5, es_steps=10, guidance_scale=3.0)
    assert torch.equal(out, z) and steps.tolist() == [0, 0, 0, 0]
    calls = []
    hook = tiny_pipe.unet.register_forward_hook(lambda m, a, o: calls.append(a[0].shape[0]))
    try:
        sigma2 = torch.tensor([0.0, 0.05, 1.0, 100.0])
        out, steps = denoise(tiny_pipe, z, prompts, sigma2, ue_steps=5, es_steps=10,
                             guidance_scale=3.0)
    finally:
        hook.remove()
    assert torch.equal(out[0], z[0]) and steps[0] == 0  # that sample is left alone
    assert torch.all(steps[1:] >= 1) and torch.all(steps <= 5) and torch.all(steps.diff() >= 0)
    assert torch.isfinite(out).all() and not torch.equal(out[1:], z[1:])
    # each step evaluates the U-Net once per live sample, twice with guidance (cond + uncond)
    assert sum(calls) == 2 * int(steps.sum())
    with pytest.raises(ValueError, match="4 latents for 3 prompts"):
        denoise(tiny_pipe, z, prompts[:3], 1.0, ue_steps=5, es_steps=10, guidance_scale=3.0)
