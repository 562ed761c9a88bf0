"""Seed power control (paper Sec. IV): env invariants, baselines, PPO training, errors, Fig. 10 CSV.

The fast set runs the real env / training code on tiny settings; ``slow`` holds the acceptance
run (PPO against the causal-DP optimum on 10,000 shared channel draws).
"""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch
from torchrl.envs.utils import check_env_specs

from meg_lightning.channels import theory
from meg_lightning.compose import load_config
from meg_lightning.errors import ConfigError, UserError
from meg_lightning.power import (
    CausalDP,
    DPPolicy,
    EqualPolicy,
    GaussianSeeds,
    LatentSeeds,
    MEGPowerEnv,
    OraclePolicy,
    equal_power,
    make_env,
    oracle_power,
    proxy_mse,
)

B = 8


def gaussian_env(n: int = 5, seed: int = 0, **kw) -> MEGPowerEnv:
    return MEGPowerEnv(GaussianSeeds(kw.pop("seed_dim", 64)), num_envs=n, num_blocks=B, seed=seed,
                       **kw)


def small_cfg(tmp_path, *extra: str):
    return load_config([f"out_dir={tmp_path}", "logger=csv", "ppo.num_envs=64",
                        "ppo.frames_per_batch=512", "ppo.total_frames=1024",
                        "ppo.minibatch_size=256", "ppo.num_epochs=2", "ppo.hidden=32",
                        "ppo.eval_episodes=256", "ppo.seed_dim=64", *extra])


# -- the environment ----------------------------------------------------------------------------
def test_check_env_specs():
    check_env_specs(gaussian_env())


def test_rollout_shape_and_specs():
    env = gaussian_env(5)
    td = env.rollout(100)  # stops at the end of the episode
    assert td.shape == torch.Size([5, B])
    for t in range(B):
        obs = td[:, t]["next"].select(*env.observation_spec.keys())
        assert env.observation_spec.is_in(obs)
        assert env.observation_spec.is_in(td[:, t].select(*env.observation_spec.keys()))
    assert env.action_spec.is_in(td["action"][:, 0])


def test_reward_zero_before_last_block():
    td = gaussian_env(7).rollout(B)
    r = td["next", "reward"].squeeze(-1)  # (N, B)
    assert torch.all(r[:, :-1] == 0)
    assert torch.all(r[:, -1] < 0)  # -latent_mse
    done = td["next", "done"].squeeze(-1)
    assert not done[:, :-1].any() and done[:, -1].all()


class ConstantPolicy:
    def __init__(self, a: float):
        self.a = a

    def __call__(self, td):
        return td.set("action", torch.full_like(td["budget"], self.a))


@pytest.mark.parametrize("a", [0.0, 0.05, 0.3, 1.0])
def test_budget_never_exceeded_and_spent_exactly(a):
    td = gaussian_env(6).rollout(B, ConstantPolicy(a))
    power = td["next", "power"][:, -1]  # (N, B) fractions of P_max per block
    spent = td["next", "power"].sum(-1)  # (N, T) cumulative spend
    assert torch.all(spent <= 1.0 + 1e-6)
    assert torch.allclose(power.sum(-1), torch.ones(6), atol=1e-6)  # spent exactly
    expected = torch.tensor([min(a, max(1.0 - a * t, 0.0)) for t in range(B)])
    expected[-1] = 1.0 - expected[:-1].sum()  # the last block spends what remains
    assert torch.allclose(power, expected.expand(6, B), atol=1e-6)
    if a == 1.0:  # asking for more than remains gets exactly what remains (eq. 33)
        assert torch.all(power[:, 0] == 1.0) and torch.all(power[:, 1:] == 0)


def test_random_actions_respect_budget():
    env = gaussian_env(64, seed=3)
    td = env.rollout(B)  # random actions in [0, 1]
    remaining = td["next", "budget"].squeeze(-1)
    assert torch.all(remaining >= 0) and torch.all(remaining[:, -1] == 0)
    assert torch.allclose(td["next", "power"][:, -1].sum(-1), torch.ones(64), atol=1e-6)


def test_equal_power_matches_ergodic_closed_form():
    env = MEGPowerEnv(GaussianSeeds(256), num_envs=4000, num_blocks=B, snr_db=20.0, seed=1)
    end = env.rollout(B, EqualPolicy(env))[:, -1]["next"]
    closed = theory.ergodic_mse_mmse(theory.noise_var_from_snr_db(20.0))
    assert float(end["latent_mse"].mean()) == pytest.approx(closed, rel=0.05)
    assert float(end["expected_mse"].mean()) == pytest.approx(closed, rel=0.05)
    assert float(-end["reward"].mean()) == pytest.approx(float(end["latent_mse"].mean()))


def test_observation_is_the_state_of_eq31():
    env = gaussian_env(4)
    td = env.rollout(B, EqualPolicy(env))
    g = td["fading"].square().sum(-1)  # (N, T, B)
    for t in range(B):
        assert torch.allclose(td[:, t]["g"].squeeze(-1), g[:, t, t])
        assert torch.allclose(td[:, t]["t"], torch.full((4, 1), t / B))
    assert torch.allclose(td[:, 1]["budget"], torch.full((4, 1), 1 - 1 / B))
    assert td["seed"].shape == (4, B, env.seed_features)


def test_same_seed_same_draws():
    ea, eb = gaussian_env(3, seed=5), gaussian_env(3, seed=5)
    a, b = ea.rollout(B, EqualPolicy(ea)), eb.rollout(B, EqualPolicy(eb))
    assert torch.equal(a["fading"], b["fading"]) and torch.equal(a["next", "reward"], b["next", "reward"])


def test_latent_seeds_with_codec_and_images():
    """The meg scheme's mechanics: codec seeds, z_hat from the decoder, PSNR / FID rewards."""
    from meg_lightning.codecs.module import CodecModule
    from meg_lightning.metrics.fid import PixelFeatures

    torch.manual_seed(0)
    z = torch.randn(12, 4, 4, 4)
    codec = CodecModule((4, 4, 4), codec={"fc": 0.5, "arch": "mlp"}).eval()
    images = lambda z: torch.sigmoid(z[:, :3].repeat_interleave(2, -1).repeat_interleave(2, -2))  # noqa: E731
    src = LatentSeeds(z, codec=codec)
    src.images = images  # a stand-in for the VAE decoder (any latent -> [0, 1] image map)
    env = MEGPowerEnv(src, num_envs=6, num_blocks=4, reward="fid", fid_extractor=PixelFeatures(4),
                      seed=0)
    check_env_specs(env)
    end = env.rollout(4, EqualPolicy(env))[:, -1]["next"]
    assert src.seed_dim == 32
    assert torch.all(end["fid"] >= 0) and torch.all(end["fid"] == end["fid"][0])
    assert torch.allclose(end["reward"], -end["fid"])
    assert torch.all(end["psnr"] > 0) and torch.all(end["latent_mse"] > 0)


# -- baselines ----------------------------------------------------------------------------------
def test_oracle_is_kkt_optimal_and_uses_the_budget():
    g = torch.empty(200, B, dtype=torch.float64).exponential_(generator=torch.Generator().manual_seed(0))
    p = oracle_power(g, 20.0)
    assert torch.allclose(p.sum(-1), torch.full((200,), float(B), dtype=torch.float64))
    assert torch.all(p >= 0)
    # KKT: the marginal gain g s2 / (p g + s2)^2 is equal on active blocks and lower on idle ones
    s2 = theory.noise_var_from_snr_db(20.0)
    marg = g * s2 / (p * g + s2) ** 2
    on = p > 1e-9
    mu = torch.where(on, marg, torch.zeros_like(marg)).amax(-1, keepdim=True)
    assert torch.allclose(torch.where(on, marg, mu), mu.expand_as(marg), rtol=1e-6)
    assert torch.all(torch.where(on, mu, marg) <= mu + 1e-12)


def test_order_equal_dp_oracle_on_shared_draws():
    g = torch.empty(3000, B, dtype=torch.float64).exponential_(generator=torch.Generator().manual_seed(1))
    dp = CausalDP(B, 20.0, grid=200, quantiles=64)
    pd = dp.allocate(g)
    assert torch.allclose(pd.sum(-1), torch.full((3000,), float(B), dtype=torch.float64))
    e, d, o = (float(proxy_mse(p, g, 20.0).mean()) for p in (equal_power(g), pd, oracle_power(g, 20.0)))
    assert e > d > o
    assert dp.expected_mse == pytest.approx(d, rel=0.05)


@pytest.mark.parametrize("blocks,snr_db", [(4, 10.0), (3, -12.0)])
def test_dp_table_equals_the_direct_bellman_minimum(blocks, snr_db):
    """The sliding-window (min, +) convolution gives the same V_t(r) as the Bellman minimum over
    every (g, r_i, r_k) written out with its feasibility mask."""
    dp = CausalDP(blocks, snr_db, grid=60, quantiles=16)
    u = (torch.arange(16, dtype=torch.float64) + 0.5) / 16
    g = -torch.log1p(-u)
    spend = dp.r[:, None] - dp.r[None, :]  # (R, R): r_i - r_k
    for t in range(blocks - 2, -1, -1):
        cost = dp._d(spend.clamp_min(0)[None] * g[:, None, None]) + dp.value[t + 1][None, None, :]
        cost = cost.masked_fill(spend[None] < -1e-12, math.inf)
        torch.testing.assert_close(dp.value[t], cost.min(-1).values.mean(0), rtol=1e-12, atol=1e-14)
    # more remaining power never costs more, and the last block spends it all
    assert torch.all(dp.value[0].diff() <= 1e-15)
    assert float(dp.value[blocks - 1, 0]) == pytest.approx(1.0)


def test_env_policies_follow_the_baselines():
    env = gaussian_env(300, seed=2)
    res = {}
    for name, pol in {"equal": EqualPolicy(env), "dp": DPPolicy(env),
                      "oracle": OraclePolicy(env)}.items():
        env.set_seed(2)
        end = env.rollout(B, pol)[:, -1]["next"]
        g = end["fading"].square().sum(-1)
        assert torch.allclose(end["expected_mse"].squeeze(-1),
                              proxy_mse(end["power"].double() * B, g.double(), 20.0).float(), rtol=1e-4)
        res[name] = float(end["expected_mse"].mean())
    assert res["equal"] > res["dp"] > res["oracle"]


# -- errors -------------------------------------------------------------------------------------
@pytest.mark.parametrize("override,key", [
    ("ppo.p_max_mw=0", "ppo.p_max_mw"),
    ("ppo.p_max_mw=-1", "ppo.p_max_mw"),
    ("ppo.reward=ssim", "ppo.reward"),
    ("ppo.num_blocks=7", "ppo.num_blocks"),  # 32 complex symbols do not split into 7 blocks
    ("ppo.equalizer=none", "ppo.equalizer"),
])
def test_bad_input_is_a_config_error(tmp_path, override, key):
    with pytest.raises(ConfigError) as e:
        make_env(small_cfg(tmp_path, override))
    assert e.value.key == key and "\n" not in str(e.value)


def test_bad_input_direct_env_arguments():
    with pytest.raises(ConfigError, match="p_max_mw"):
        MEGPowerEnv(GaussianSeeds(64), p_max_mw=0.0)
    with pytest.raises(ConfigError, match="reward"):
        MEGPowerEnv(GaussianSeeds(64), reward="bleu")
    with pytest.raises(ConfigError, match="num_blocks"):
        MEGPowerEnv(GaussianSeeds(64), num_blocks=3)
    with pytest.raises(ConfigError, match="ppo.reward"):  # psnr needs decoded images
        MEGPowerEnv(GaussianSeeds(64), reward="psnr")


def test_codec_checkpoint_for_another_latent_shape(tmp_path, monkeypatch):
    from meg_lightning.codecs.module import CodecModule
    from meg_lightning.data import TensorLatentDataModule

    codec = CodecModule((4, 8, 8), codec={"fc": 0.5, "arch": "mlp"})
    ckpt = tmp_path / "codec.ckpt"
    torch.save({"hyper_parameters": dict(codec.hparams), "state_dict": codec.state_dict()}, ckpt)
    dm = TensorLatentDataModule(torch.randn(10, 4, 4, 4))
    dm.prepare_data = lambda: None
    monkeypatch.setattr("meg_lightning.power.env.build_datamodule", lambda cfg: dm)
    cfg = small_cfg(tmp_path, "ppo.scheme=meg", f"codec.checkpoint={ckpt}")
    with pytest.raises(ConfigError) as e:
        make_env(cfg)
    assert e.value.key == "latent_shape"
    cfg = small_cfg(tmp_path, "ppo.scheme=meg")  # no checkpoint at all, and none trained
    with pytest.raises(UserError, match="no trained codec for fc=0.5.*codec.checkpoint"):
        make_env(cfg)
    good = CodecModule((4, 4, 4), codec={"fc": 0.5, "arch": "mlp"})  # the right shape: seeds of k = 32
    torch.save({"hyper_parameters": dict(good.hparams), "state_dict": good.state_dict()}, ckpt)
    env = make_env(small_cfg(tmp_path, "ppo.scheme=meg", f"codec.checkpoint={ckpt}"), num_envs=4)
    assert env.source.seed_dim == 32
    assert env.rollout(B).shape == (4, B)


@pytest.mark.parametrize("override", ["ppo.p_max_mw=0", "ppo.reward=ssim", "ppo.num_blocks=7",
                                      "ppo.scheme=foo"])
def test_cli_exit_code_2(tmp_path, capsys, override):
    from meg_lightning.cli import run

    code = run(["train-ppo", f"out_dir={tmp_path}", "logger=none", "ppo.seed_dim=64", override])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and override.split("=")[0] in err


# -- training -----------------------------------------------------------------------------------
def test_train_ppo_smoke_and_resume(tmp_path):
    from meg_lightning.power.train import load_policy, main

    cfg = small_cfg(tmp_path)
    res = main(cfg)
    folder = tmp_path / "ppo"
    assert (folder / "checkpoint.pt").is_file() and (folder / "config.yaml").is_file()
    saved = json.loads((folder / "eval.json").read_text())
    assert set(saved["policies"]) == {"ppo", "equal", "causal_dp", "oracle"}
    assert res["frames"] == 1024 and saved["n"] == 256
    for r in saved["policies"].values():
        assert r["budget_used"] == pytest.approx(1.0, abs=1e-5)
    assert any((folder / "logs").rglob("*.csv"))
    # resume: the same run with a larger budget continues from the saved frame count
    res2 = main(small_cfg(tmp_path, "ppo.total_frames=2048"))
    assert res2["frames"] == 2048
    assert torch.load(folder / "checkpoint.pt", weights_only=False)["frames"] == 2048
    actor = load_policy(cfg)
    assert actor is not None
    with pytest.raises(ConfigError, match="ppo.hidden"):
        main(small_cfg(tmp_path, "ppo.hidden=16", "ppo.total_frames=4096"))


def test_fig10_sweep_csv(tmp_path):
    from meg_lightning.power.evaluate import FIG10_COLUMNS
    from meg_lightning.power.sweep import fig10_sweep

    cfg = small_cfg(tmp_path, "ppo.total_frames=512")
    path = fig10_sweep(cfg, powers=(0.5, 4.0), num_images=128)
    assert path == tmp_path / "ppo" / "fig10.csv"
    rows = list(csv.DictReader(path.open()))
    assert tuple(rows[0]) == FIG10_COLUMNS
    assert {(float(r["p_max_mw"]), r["policy"]) for r in rows} == {
        (p, k) for p in (0.5, 4.0) for k in ("ppo", "equal", "causal_dp", "oracle")}
    mse = {(float(r["p_max_mw"]), r["policy"]): float(r["latent_mse"]) for r in rows}
    assert mse[4.0, "equal"] < mse[0.5, "equal"]  # more power, less distortion (N0 fixed)
    for p in (0.5, 4.0):  # same draws for every policy: the planners beat equal power
        assert mse[p, "oracle"] <= mse[p, "causal_dp"] * 1.02 and mse[p, "causal_dp"] < mse[p, "equal"]
        lo, hi = (float(r[f"latent_mse_{s}"]) for r in rows for s in ("lo", "hi")
                  if float(r["p_max_mw"]) == p and r["policy"] == "equal")
        assert lo < mse[p, "equal"] < hi
    assert all(math.isnan(float(r["fid"])) for r in rows)  # gaussian seeds: no images


# -- acceptance (slow) --------------------------------------------------------------------------
@pytest.mark.slow
def test_ppo_closes_80_percent_of_the_gap_to_causal_dp(tmp_path):
    """20 dB average SNR, 8 blocks, latent_mse proxy; 10,000 held-out draws shared by all."""
    import time

    from meg_lightning.power.train import main

    cfg = load_config([f"out_dir={tmp_path}", "logger=none", "ppo.avg_snr_db=20",
                       "ppo.num_blocks=8", "ppo.eval_episodes=10000"])
    t0 = time.perf_counter()
    res = main(cfg)
    took = time.perf_counter() - t0
    pol = {k: v["expected_mse"] for k, v in res["policies"].items()}
    print(f"equal {pol['equal']:.5f} ppo {pol['ppo']:.5f} causal_dp {pol['causal_dp']:.5f} "
          f"oracle {pol['oracle']:.5f} gap {res['gap_closed']:.1%} train {res['train_seconds']:.0f} s")
    assert pol["equal"] > pol["causal_dp"] > pol["oracle"]
    assert res["gap_closed"] >= 0.8
    assert took < 600


def test_power_policies_are_registered_and_offered_by_their_model():
    from meg_lightning.power import POLICIES, baseline_policies

    assert {"equal", "causal_dp", "oracle", "ppo"} <= set(POLICIES.names())
    assert POLICIES["ppo"].learned and not POLICIES["oracle"].causal
    zf = MEGPowerEnv(GaussianSeeds(256), num_envs=4, num_blocks=B, equalizer="zf", seed=0)
    ranged = MEGPowerEnv(GaussianSeeds(256), num_envs=4, num_blocks=B, snr_db=(-10.0, 10.0),
                         seed=0)
    assert set(baseline_policies(gaussian_env(4))) == {"equal", "causal_dp", "oracle"}
    assert set(baseline_policies(zf)) == {"equal", "causal_dp", "oracle"}
    # the DP and the oracle optimise the link model at one SNR: not offered over an SNR range
    assert set(baseline_policies(ranged)) == {"equal"}
    with pytest.raises(ConfigError, match="ppo.policies='greedy'"):
        POLICIES["greedy"]


# -- link model, floors, the residual action, SNR ranges ----------------------------------------
def _random_model(blocks: int, k: int = 24, seed: int = 0):
    from meg_lightning.power.baselines import LinkModel

    gen = torch.Generator().manual_seed(seed)
    w = torch.rand(k, generator=gen, dtype=torch.float64) ** 3  # uneven error shares
    e = 0.2 + 2 * torch.rand(k, generator=gen, dtype=torch.float64)
    return LinkModel.from_symbols(w, e, blocks)


@pytest.mark.parametrize("floor", [0.0, 0.2])
def test_causal_dp_is_the_brute_force_optimum_of_a_general_model(floor):
    """B = 3 blocks, an uneven codec-like link model, a power floor: V_0 of the DP equals the
    causal minimum written out by brute force over a 4x finer action grid, and its allocations
    keep the budget and the floors."""
    blocks, snr_db, q = 3, 0.0, 12
    model = _random_model(blocks)
    dp = CausalDP(blocks, snr_db, grid=150, quantiles=q, model=model, min_power=floor)
    s2 = theory.noise_var_from_snr_db(snr_db)
    g = -torch.log1p(-(torch.arange(q, dtype=torch.float64) + 0.5) / q)
    free = blocks * (1 - floor)

    def d(t, p, gain):  # block t's cost at free power p (any shape) and gain
        return model.block_cost((floor + p) * gain, s2, block=t)

    def v_last(r):  # (...,) -> (...): the last block spends what is left
        return d(2, r[..., None], g).mean(-1)

    def v_mid(r):  # V_1(r) for r (R,): min over a fine grid of spends, averaged over g_1
        frac = torch.linspace(0, 1, 601, dtype=torch.float64)
        p = r[:, None] * frac[None, :]  # (R, A)
        cost = d(1, p[:, None, :], g[None, :, None]) + v_last(r[:, None] - p)[:, None, :]
        return cost.min(-1).values.mean(-1)

    frac = torch.linspace(0, 1, 601, dtype=torch.float64)
    p0 = free * frac  # (A,)
    v1 = v_mid(free - p0)
    v0 = (d(0, p0[None, :], g[:, None]) + v1[None, :]).min(-1).values.mean()
    assert float(dp.value[0, -1]) == pytest.approx(float(v0), rel=2e-3)
    gains = torch.distributions.Exponential(1.0).sample((2000, blocks)).double()
    p = dp.allocate(gains)
    assert torch.allclose(p.sum(-1), torch.full((2000,), float(blocks), dtype=torch.float64))
    assert float(p.min()) >= floor - 1e-9
    # the DP beats equal power on the same draws, under the model it optimises
    assert float(model.distortion(p, gains, s2).mean()) < float(
        model.distortion(equal_power(gains), gains, s2).mean())


def test_oracle_is_the_optimum_of_a_general_model_with_a_floor():
    """The nested bisection of the oracle beats every random feasible allocation of the same
    draws (a brute-force search over 4,000 candidates per episode)."""
    blocks, snr_db, floor = 4, 5.0, 0.1
    model = _random_model(blocks, seed=3)
    s2 = theory.noise_var_from_snr_db(snr_db)
    gains = torch.distributions.Exponential(1.0).sample((20, blocks)).double()
    p = oracle_power(gains, snr_db, model=model, min_power=floor)
    assert torch.allclose(p.sum(-1), torch.full((20,), float(blocks), dtype=torch.float64))
    assert float(p.min()) >= floor - 1e-9
    best = model.distortion(p, gains, s2)
    cand = torch.distributions.Dirichlet(torch.ones(blocks)).sample((4000,)).double()
    cand = floor + cand * blocks * (1 - floor)  # (C, B) feasible allocations
    for i in range(20):
        d = model.distortion(cand, gains[i].expand_as(cand), s2)
        assert float(best[i]) <= float(d.min()) + 1e-9


def test_residual_action_at_zero_is_equal_power_and_keeps_the_budget():
    from meg_lightning.power.train import ResidualAction

    for floor in (0.0, 0.01, 0.3):
        env = gaussian_env(64, seed=1, min_power=floor)
        act = ResidualAction(B, floor)
        td = env.reset()
        spent = torch.zeros(64, 1)
        for _ in range(B):
            a = act(torch.zeros(64, 1), td["budget"], td["t"])
            td["action"] = a
            td = env.step(td)["next"]
            spent += a
        torch.testing.assert_close(td["power"], torch.full_like(td["power"], 1 / B))
        # any delta: never beyond the budget, every block at least its floor
        env = gaussian_env(64, seed=1, min_power=floor)
        td, total = env.reset(), torch.zeros(64, 1)
        for _ in range(B):
            a = act(torch.randn(64, 1) * 5, td["budget"], td["t"])
            assert float((a - floor / B).min()) >= -1e-6
            td["action"] = a
            td = env.step(td)["next"]
            total += a
        assert float(total.max()) <= 1 + 1e-5


def test_snr_range_env_draws_each_episode_snr_and_observes_it():
    env = gaussian_env(2000, seed=4, snr_db=(-10.0, 10.0))
    td = env.reset()
    snr = td["snr_db"].squeeze(-1)
    assert float(snr.min()) >= -10 and float(snr.max()) <= 10 and float(snr.std()) > 4
    torch.testing.assert_close(td["snr"].squeeze(-1), snr / 10)
    end = env.rollout(B, EqualPolicy(env), tensordict=td, auto_reset=False)[:, -1]["next"]
    g = end["fading"].square().sum(-1).double()
    want = torch.stack([proxy_mse(torch.ones(1, B, dtype=torch.float64), g[i:i + 1], float(s))
                        for i, s in enumerate(snr)]).squeeze(-1)
    torch.testing.assert_close(end["expected_mse"].squeeze(-1).double(), want, rtol=1e-4,
                               atol=1e-6)


def test_frames_per_batch_without_episode_end_is_refused(tmp_path, capsys):
    from meg_lightning.cli import run

    out = tmp_path / "run"
    code = run(["train-ppo", f"out_dir={out}", "ppo.num_envs=64", "ppo.num_blocks=8",
                "ppo.frames_per_batch=256"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ppo.frames_per_batch" in err[0] and "512" in err[0]
    assert not out.exists()


def test_non_finite_reward_stops_training(tmp_path, monkeypatch):
    from meg_lightning.power import env as env_mod
    from meg_lightning.power.train import main

    real = env_mod.MEGPowerEnv._step

    def poisoned(self, td):
        out = real(self, td)
        out["reward"] = out["reward"] * float("nan")
        return out

    monkeypatch.setattr(env_mod.MEGPowerEnv, "_step", poisoned)
    with pytest.raises(UserError, match="reward"):
        main(small_cfg(tmp_path))


def test_power_saved_interpolates_equal_power_in_db():
    from meg_lightning.power.sweep import power_saved

    rows = [{"p_max_mw": p, "policy": "equal", "fid": f} for p, f in ((1.0, 100.0), (10.0, 50.0))]
    rows += [{"p_max_mw": 1.0, "policy": "ppo", "fid": 100 / math.sqrt(2)},  # half-way in log
             {"p_max_mw": 10.0, "policy": "ppo", "fid": 40.0}]  # beyond equal's curve
    power_saved(rows, "fid")
    got = {(r["p_max_mw"], r["policy"]): r["power_saved_db"] for r in rows}
    assert got[1.0, "ppo"] == pytest.approx(5.0)  # equal needs 5 dB more for that FID
    assert math.isnan(got[10.0, "ppo"]) and math.isnan(got[1.0, "equal"])


@pytest.mark.parametrize("frames", ["null", "0"])
def test_block_table_covers_every_count(tmp_path, frames):
    """Each block count trains its own policy (``ppo.block_frames: null``), or the main policy
    acts there as it is (``0``: its observation has no B in it)."""
    from meg_lightning.power.evaluate import BLOCK_COLUMNS
    from meg_lightning.power.sweep import block_table
    from meg_lightning.power.train import main as train_main

    cfg = small_cfg(tmp_path, "ppo.total_frames=512", "ppo.num_blocks=4",
                    f"ppo.block_frames={frames}")
    main = train_main(cfg)
    path = block_table(cfg, [2, 4], main=main)
    rows = list(csv.DictReader(path.open()))
    assert tuple(rows[0]) == BLOCK_COLUMNS
    assert {(int(r["num_blocks"]), r["policy"]) for r in rows} == {
        (b, k) for b in (2, 4) for k in ("equal", "causal_dp", "oracle", "ppo")}
    for b in (2, 4):
        r = {x["policy"]: float(x["vs_causal_dp"]) for x in rows if int(x["num_blocks"]) == b}
        assert r["causal_dp"] == 1.0 and r["oracle"] < 1.0 < r["equal"]
    ppo_frames = {int(x["num_blocks"]): int(x["frames"]) for x in rows if x["policy"] == "ppo"}
    assert ppo_frames[4] == main["frames"]
    assert ppo_frames[2] == (0 if frames == "0" else main["frames"])
    assert (tmp_path / "blocks").exists() == (frames == "null")


def test_power_report_section_reads_the_run(tmp_path):
    """The report section from a real (tiny) run: the held-out table, Fig. 10 with a verdict per
    budget, and the block-count table."""
    from meg_lightning.power.report import markdown
    from meg_lightning.power.sweep import main

    cfg = small_cfg(tmp_path, "ppo.total_frames=512", "ppo.num_blocks=4",
                    "ppo.fig10_powers=[0.5,4]", "ppo.block_counts=[2,4]")
    main(cfg)
    text = "\n".join(markdown(tmp_path))
    for name in ("equal", "causal_dp", "oracle", "ppo"):
        assert f"| {name} |" in text
    assert "### Fig. 10" in text and "### Block counts" in text
    assert text.count("- P_max ") == 2 and "PPO / causal DP = " in text
    assert markdown(tmp_path / "nothing") == []
