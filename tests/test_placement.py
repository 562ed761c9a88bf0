"""3GPP TR 38.901 UMi-Street Canyon placement: path loss, LOS probability, drops, average SNR.

The expected path losses are TR 38.901 Table 7.4.1-1 evaluated by hand at 3.5 GHz with
h_BS = 10 m, h_UT = 1.5 m (so d_3D = sqrt(d^2 + 8.5^2) and d'_BP = 4 * 9 * 0.5 * 3.5e9 / 3e8
= 210 m), e.g. LOS at 50 m: 32.4 + 21 log10(50.717) + 20 log10(3.5) = 32.4 + 35.808 + 10.881.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from meg_lightning.multiuser.placement import (
    SIGMA_SF_LOS,
    SIGMA_SF_NLOS,
    average_snr_db,
    breakpoint_m,
    drop_distances,
    drop_users,
    los_probability,
    noise_dbm,
    pathloss_los,
    pathloss_nlos,
)

FC = 3.5  # GHz


def _users(**kw):
    base = dict(min_distance_m=10.0, cell_radius_m=200.0, carrier_ghz=FC, tx_power_dbm=30.0,
                bandwidth_mhz=20.0, noise_figure_db=9.0, shadowing=True)
    return SimpleNamespace(**{**base, **kw})


def test_breakpoint_distance():
    assert breakpoint_m(FC) == pytest.approx(210.0)
    assert breakpoint_m(28.0) == pytest.approx(1680.0)


@pytest.mark.parametrize("d, expected", [
    (50.0, 79.0896),  # PL_1, below the breakpoint
    (150.0, 88.9939),  # PL_1
    (300.0, 98.2443),  # PL_2 = 32.4 + 40 log10(d3) + 20 log10(fc) - 9.5 log10(210^2 + 8.5^2)
    (1000.0, 119.1531),  # PL_2
])
def test_los_pathloss_against_the_table(d, expected):
    assert float(pathloss_los(torch.tensor([d]), FC)) == pytest.approx(expected, abs=1e-3)


def test_los_pathloss_is_continuous_at_the_breakpoint():
    """PL_2 - PL_1 = 9.5 log10(d_3D^2) - 9.5 log10(d'_BP^2 + dh^2) = 0 at d = d'_BP."""
    bp = breakpoint_m(FC)
    below, above = pathloss_los(torch.tensor([bp, bp + 1e-6], dtype=torch.float64), FC)
    assert float(above - below) == pytest.approx(0.0, abs=1e-4)
    # and the slope changes from 21 to 40 dB per decade
    far = pathloss_los(torch.tensor([1000.0, 2000.0]), FC)
    assert float(far[1] - far[0]) == pytest.approx(40 * math.log10(
        math.sqrt(2000 ** 2 + 72.25) / math.sqrt(1000 ** 2 + 72.25)), abs=1e-9)


@pytest.mark.parametrize("d, nlos_prime", [(30.0, 86.7229), (100.0, 104.6438),
                                           (200.0, 115.2288), (500.0, 129.2645)])
def test_nlos_pathloss_is_the_max_of_los_and_nlos_prime(d, nlos_prime):
    los = float(pathloss_los(torch.tensor([d]), FC))
    assert float(pathloss_nlos(torch.tensor([d]), FC)) == pytest.approx(max(los, nlos_prime),
                                                                         abs=1e-3)


def test_nlos_takes_los_where_it_is_larger():
    """Within UMi's validity PL'_NLOS is the larger term; the LOS slope (40 dB/decade beyond the
    breakpoint against 35.3) overtakes it only far out: at 0.5 GHz (d'_BP = 30 m) from ~6.7 km.
    At 10 km PL_2 = 32.4 + 40 log10(d_3D) + 20 log10(0.5) - 9.5 log10(30^2 + 8.5^2) = 158.00 dB
    and PL'_NLOS = 157.19 dB, so NLOS must return the LOS value."""
    d = torch.tensor([10000.0], dtype=torch.float64)
    los = float(pathloss_los(d, 0.5))
    assert los == pytest.approx(158.0, abs=0.01)
    prime = 35.3 * math.log10(math.sqrt(1e8 + 72.25)) + 22.4 + 21.3 * math.log10(0.5)
    assert prime == pytest.approx(157.19, abs=0.01) and los > prime
    assert float(pathloss_nlos(d, 0.5)) == los
    grid = torch.linspace(10, 5000, 500, dtype=torch.float64)
    assert (pathloss_nlos(grid, FC) >= pathloss_los(grid, FC)).all()


def test_los_probability():
    d = torch.tensor([10.0, 17.0, 18.0], dtype=torch.float64)
    assert torch.equal(los_probability(d), torch.ones(3, dtype=torch.float64))
    assert float(los_probability(torch.tensor([36.0]))) == pytest.approx(
        0.5 + math.exp(-1) * 0.5)
    far = los_probability(torch.linspace(18.5, 2000, 200, dtype=torch.float64))
    assert (far < 1).all() and (far.diff() < 0).all()


def test_noise_and_average_snr():
    assert noise_dbm(20.0, 9.0) == pytest.approx(-174 + 73.0103 + 9, abs=1e-4)
    # 30 dBm, NLOS at 200 m (115.2288 dB): 30 - 115.2288 + 91.9897
    snr = average_snr_db(pathloss_nlos(torch.tensor([200.0]), FC), 30.0, 20.0, 9.0)
    assert float(snr) == pytest.approx(6.7609, abs=1e-3)


def test_drop_distances_are_uniform_in_area():
    """Kolmogorov-Smirnov against F(d) = (d^2 - a^2) / (b^2 - a^2): the statistic stays below the
    1% critical value 1.63 / sqrt(n); a draw uniform in distance (not area) fails it."""
    a, b, n = 10.0, 200.0, 20000
    d = drop_distances(n, a, b, torch.Generator().manual_seed(0)).sort().values
    assert float(d.min()) >= a and float(d.max()) <= b

    def ks(x):
        cdf = (x ** 2 - a ** 2) / (b ** 2 - a ** 2)
        i = torch.arange(1, n + 1, dtype=torch.float64)
        return float(torch.maximum(i / n - cdf, cdf - (i - 1) / n).max())

    crit = 1.63 / math.sqrt(n)
    assert ks(d) < crit
    linear = (a + (b - a) * torch.rand(n, generator=torch.Generator().manual_seed(0),
                                       dtype=torch.float64)).sort().values
    assert ks(linear) > crit
    # half of the annulus' area lies beyond sqrt((a^2 + b^2) / 2)
    assert float((d > math.sqrt((a ** 2 + b ** 2) / 2)).double().mean()) == pytest.approx(
        0.5, abs=0.02)


def test_drop_users_is_deterministic_by_seed_and_follows_the_model():
    users = _users()
    one = drop_users(8, users, torch.Generator().manual_seed(5))
    assert one == drop_users(8, users, torch.Generator().manual_seed(5))
    assert one != drop_users(8, users, torch.Generator().manual_seed(6))
    # no shadowing: the SNR is exactly P - PL(d, state) - N
    flat = drop_users(4000, _users(shadowing=False), torch.Generator().manual_seed(1))
    d = torch.tensor(flat.distance_m, dtype=torch.float64)
    los = torch.tensor(flat.los)
    pl = torch.where(los, pathloss_los(d, FC), pathloss_nlos(d, FC))
    assert torch.allclose(torch.tensor(flat.snr_db, dtype=torch.float64),
                          30.0 - pl - noise_dbm(20.0, 9.0), atol=1e-9)
    # the LOS share matches the mean LOS probability of the drawn distances
    assert float(los.double().mean()) == pytest.approx(float(los_probability(d).mean()),
                                                       abs=0.025)
    assert bool(los[d <= 18].all())
    # shadowing: zero-mean log-normal with sigma 4 dB (LOS) / 7.82 dB (NLOS)
    shadow = drop_users(4000, users, torch.Generator().manual_seed(1))
    dev = torch.tensor(shadow.pathloss_db, dtype=torch.float64) - pl
    assert torch.equal(torch.tensor(shadow.los), los)  # same distances and states first
    assert float(dev[los].std()) == pytest.approx(SIGMA_SF_LOS, rel=0.08)
    assert float(dev[~los].std()) == pytest.approx(SIGMA_SF_NLOS, rel=0.08)
    assert abs(float(dev.mean())) < 0.3
