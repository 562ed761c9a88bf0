"""Figures a reader can read (issue 27): every figure `meg figures` writes, rendered from a fixed
results file (``tests/data/figures/results.csv``, the demo's), passes three checks made on the
rendered figure (matplotlib's renderer, not the code that drew it):

- **legend**: every plotted series (a labelled line or marker set) is in a legend (its axes' own
  or the figure's shared one), every legend entry is a plotted series, and no line is unlabelled;
- **text**: no two text boxes (titles, axis and tick labels, legend entries, annotations)
  overlap;
- **cap**: the value range of a PSNR axis stays below the 100 dB cap of identical images;

and the colours follow the scheme registry: one colour per scheme family in every figure, no two
families sharing one; one marker per rate fc in every figure. ``tests/data/figures/old_figures.py``
(the code before) fails them. Fig. 10 is drawn from a file of the new format
(``fig10_new.csv``: intervals, power saved, two block counts) and of the old one.
"""

from __future__ import annotations

import importlib.util
import itertools
import math
import random
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib import colors as mcolors  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.collections import PathCollection  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.text import Text  # noqa: E402
from PIL import Image  # noqa: E402

from meg_lightning.evaluation.results import read_results  # noqa: E402

DATA = Path(__file__).parent / "data" / "figures"
#: PSNR of identical images (metrics.image.PSNR_CAP_DB)
CAP_DB = 100.0


# -- the checks ----------------------------------------------------------------------------------


def _family(lbl: str):
    """The registered scheme family a legend label names (``meg+dm fc=0.5`` -> ``meg``), or
    None for a label that is not a scheme's (OPTA, the frontier, I_0, ...)."""
    from meg_lightning.schemes import SCHEMES, base_name

    fam = base_name(lbl.partition(" fc=")[0])
    return fam if fam in SCHEMES else None


def _series(ax):
    """(labelled series artists, unlabelled line artists) of ``ax``: lines and marker sets with
    data; bands (PolyCollection), images and patches are not series."""
    labelled, unlabelled = [], []
    for a in [*ax.lines, *ax.collections]:
        if isinstance(a, Line2D):
            if len(np.atleast_1d(a.get_xdata())) == 0:
                continue
        elif isinstance(a, PathCollection):
            if len(a.get_offsets()) == 0:
                continue
        else:
            continue
        (unlabelled if a.get_label().startswith("_") else labelled).append(a)
    return labelled, unlabelled


def _legend_labels(legend) -> set[str]:
    return {t.get_text() for t in legend.get_texts()} if legend is not None else set()


def legend_problems(fig) -> list[str]:
    shared = set().union(*(_legend_labels(lg) for lg in fig.legends))
    problems, plotted, listed = [], set(), set(shared)
    for ax in fig.axes:
        labelled, unlabelled = _series(ax)
        own = _legend_labels(ax.get_legend())
        listed |= own
        labels = {a.get_label() for a in labelled}
        plotted |= labels
        missing = labels - own - shared
        if missing:
            problems.append(f"legend: {len(missing)} series of '{ax.get_title()}' not in a "
                            f"legend: {sorted(missing)}")
        if unlabelled:
            problems.append(f"legend: {len(unlabelled)} unlabelled line(s) in "
                            f"'{ax.get_title()}'")
    extra = listed - plotted
    if extra:
        problems.append(f"legend: entries with no series: {sorted(extra)}")
    return problems


def _hidden_tick_labels(fig) -> set[int]:
    """ids of the tick labels the renderer does not draw: ticks outside the view."""
    hidden = set()
    axes = list(fig.axes)
    axes += [c for ax in fig.axes for c in getattr(ax, "child_axes", [])]
    for ax in axes:
        for axis in (ax.xaxis, ax.yaxis):
            lo, hi = sorted(axis.get_view_interval())
            tol = 1e-9 * max(abs(lo), abs(hi), 1.0)
            for tick in [*axis.get_major_ticks(), *axis.get_minor_ticks()]:
                loc = tick.get_loc()
                if loc is None or not lo - tol <= loc <= hi + tol:
                    hidden |= {id(tick.label1), id(tick.label2)}
    return hidden


def text_boxes(fig) -> list[tuple[str, object]]:
    if not isinstance(fig.canvas, FigureCanvasAgg):  # pyplot closed it: a canvas to draw on
        FigureCanvasAgg(fig)
    fig.draw_without_rendering()  # every artist placed as when saved, no pixels
    renderer = fig.canvas.get_renderer()
    hidden = _hidden_tick_labels(fig)
    out = []
    for t in fig.findobj(Text):
        if not t.get_visible() or not t.get_text().strip() or id(t) in hidden:
            continue
        bb = t.get_window_extent(renderer)
        if bb.width >= 1 and bb.height >= 1:
            out.append((t.get_text(), bb))
    return out


def overlap_problems(fig) -> list[str]:
    problems = []
    for (ta, a), (tb, b) in itertools.combinations(text_boxes(fig), 2):
        if min(a.x1, b.x1) - max(a.x0, b.x0) > 1 and min(a.y1, b.y1) - max(a.y0, b.y0) > 1:
            problems.append(f"text: {ta!r} overlaps {tb!r}")
    return problems


def cap_problems(fig) -> list[str]:
    return [f"cap: PSNR axis '{ax.get_title()}' reaches {ax.get_ylim()[1]:.1f} dB"
            for ax in fig.axes if "PSNR" in ax.get_ylabel() and _series(ax)[0]
            and max(ax.get_ylim()) >= CAP_DB]


def _colour(a):
    if isinstance(a, Line2D):
        return mcolors.to_rgb(a.get_color())
    return mcolors.to_rgb(a.get_facecolor()[0])


def colour_problems(fig, seen: dict | None = None) -> list[str]:
    """One colour per scheme family in ``fig`` (and the same as in the figures before, ``seen``:
    family -> colour, updated), no two families sharing a colour."""
    seen = {} if seen is None else seen
    by_family: dict[str, set] = {}
    for ax in fig.axes:
        for a in _series(ax)[0]:
            fam = _family(a.get_label())
            if fam is not None:
                by_family.setdefault(fam, set()).add(_colour(a))
    problems = [f"colour: {fam} drawn in {len(c)} colours" for fam, c in by_family.items()
                if len(c) > 1]
    owners: dict[tuple, set] = {}
    for fam, cs in by_family.items():
        for c in cs:
            owners.setdefault(c, set()).add(fam)
    problems += [f"colour: {sorted(f)} share one colour" for f in owners.values() if len(f) > 1]
    for fam, cs in by_family.items():
        if len(cs) == 1:
            (c,) = cs
            if seen.setdefault(fam, c) != c:
                problems.append(f"colour: {fam} changes colour between figures")
    return problems


def rate_problems(fig, seen: dict | None = None) -> list[str]:
    """One marker per rate fc in ``fig`` and in the figures before (``seen``: fc -> marker,
    updated), whatever the scheme; no two rates sharing a marker."""
    seen = {} if seen is None else seen
    problems = []
    for ax in fig.axes:
        for a in _series(ax)[0]:
            lbl = a.get_label()
            if _family(lbl) is None or " fc=" not in lbl or not isinstance(a, Line2D):
                continue
            fc = float(lbl.partition(" fc=")[2])
            if seen.setdefault(fc, a.get_marker()) != a.get_marker():
                problems.append(f"rate: {lbl} marker {a.get_marker()!r}, fc={fc:g} drew "
                                f"{seen[fc]!r} before")
    markers = list(seen.values())
    if len(set(markers)) < len(markers):
        problems.append(f"rate: rates share a marker: {seen}")
    return problems


def check(fig, seen: dict | None = None, rates: dict | None = None) -> list[str]:
    return (legend_problems(fig) + overlap_problems(fig) + cap_problems(fig)
            + colour_problems(fig, seen) + rate_problems(fig, rates))


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rows():
    return read_results(DATA / "results.csv")


@pytest.fixture
def captured(monkeypatch):
    """Every figure saved while the test runs, by file stem (nothing is written: the figure is
    kept, and drawn by the checks)."""
    figs: dict[str, Figure] = {}

    def savefig(self, fname, *args, **kwargs):
        stem = Path(str(fname)).name.split(".")[0]
        if stem == "":  # atomic_path's temp file: .tmp-<name>.<ext>.<random>
            stem = Path(str(fname)).name.split(".")[1]
        stem = stem.removeprefix("tmp-")
        figs.setdefault(stem, self)
        Path(fname).write_bytes(b"")

    monkeypatch.setattr(Figure, "savefig", savefig)
    return figs


def _example_images(rows, folder: Path) -> None:
    """Stand-ins for `meg eval`'s example strips (4 tiles of 64 px, as the demo's): one per cell
    and the reference I_0."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    strip = rng.integers(0, 255, (64, 256, 3), dtype=np.uint8)
    for name in ["reference"] + [r["cell"] for r in rows]:
        Image.fromarray(strip).save(folder / f"{name}.png")


def _old():
    spec = importlib.util.spec_from_file_location("old_figures", DATA / "old_figures.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# -- the tests -----------------------------------------------------------------------------------


def test_every_figure_of_meg_figures_passes_the_checks(rows, captured, tmp_path):
    from meg_lightning.evaluation.figures import make_figures
    from meg_lightning.schemes import SCHEMES

    ev = tmp_path / "eval"
    _example_images(rows, ev / "examples")
    paths, notes = make_figures(DATA / "results.csv", ev / "examples", DATA / "fig10_new.csv",
                                tmp_path / "figures", table2=False)
    assert not notes, notes
    stems = {p.name.split(".")[0] for p in paths}
    assert stems == set(captured)
    assert {"fig5_examples", "fig6_psnr", "fig7_fid", "fig_semantic", "fig_codecs",
            "fig8_psnr_fc", "fig9_fid_fc", "fig_compute_psnr", "fig_compute_semantic",
            "fig10_fid_power", "grid_awgn_snr0", "grid_rayleigh_snr10"} <= stems
    seen: dict = {}
    rates: dict = {}
    problems = {stem: check(fig, seen, rates) for stem, fig in sorted(captured.items())}
    assert not any(problems.values()), {k: v for k, v in problems.items() if v}
    # the colours are the registry's hues (the demo's families all have hues of their own)
    assert {fam: mcolors.to_rgb(SCHEMES[fam].hue) for fam in seen} == seen
    assert {"centralized", "feature", "meg", "meg-adaptive", "linear", "digital",
            "prompt"} <= set(seen)
    assert set(rates) == {0.25, 0.5, 0.75}  # each rate one marker in every figure
    # the prompt scheme's identical images are "exact" stars on a clipped axis, not 100 dB
    fig6 = captured["fig6_psnr"]
    assert all(max(ax.get_ylim()) < 50 for ax in fig6.axes if ax.get_ylabel())
    assert any(t.get_text() == "exact" for t in fig6.axes[0].get_yticklabels())
    stars = [ln for ax in fig6.axes for ln in ax.lines if ln.get_marker() == "*"]
    assert len(stars) == 4  # AWGN 10 and 20 dB: all exact; Rayleigh 10 and 20 dB: some
    shares = sorted(t.get_text() for ax in fig6.axes for t in ax.texts)
    assert shares == ["38%", "90%"]  # 48 and 115 of 128 images
    # the FID bootstrap interval is a band
    assert sum(len(ax.collections) for ax in captured["fig7_fid"].axes) >= 20
    # the compute figures draw the Pareto frontier
    for stem in ("fig_compute_psnr", "fig_compute_semantic"):
        fronts = [ln for ax in captured[stem].axes for ln in ax.lines
                  if ln.get_label().startswith("Pareto frontier")]
        assert len(fronts) == 3, stem


def test_identical_images_without_the_capped_count_are_exact(rows):
    """An older results file has no psnr_capped / psnr_cap_db: a PSNR of +inf or at the cap is
    still drawn as "exact", not as a number that stretches the axis."""
    from meg_lightning.evaluation.figures import draw_vs_snr

    old = []
    for r in rows:
        if 0 < (r.get("psnr_capped") or 0) < r["n_images"]:
            continue  # a partly exact cell: without the count its mean cannot be corrected
        r = {k: v for k, v in r.items() if k not in ("psnr_capped", "psnr_cap_db")}
        if r["scheme"] == "prompt" and r["channel"] == "awgn" and r["snr_db"] == 20.0:
            r["psnr_db"] = math.inf
        old.append(r)
    fig = draw_vs_snr(old, "psnr_db")
    assert check(fig) == []
    stars = [ln for ax in fig.axes for ln in ax.lines if ln.get_marker() == "*"]
    assert len(stars) == 2  # AWGN 10 dB (at the cap) and 20 dB (+inf)
    assert all(max(ax.get_ylim()) < 50 for ax in fig.axes)
    plt_close(fig)


def test_the_checks_flag_the_figures_before_issue_27(rows):
    """The old Figs. 6-7 and quality-vs-compute figure, rendered on the same results, fail."""
    old = _old()
    fig6 = check(old.fig_vs_snr(rows, "psnr_db", None))
    assert any(p.startswith("legend:") and "not in a legend" in p for p in fig6), fig6
    assert any(p.startswith("cap:") for p in fig6), fig6
    assert any(p.startswith("colour:") and "share one colour" in p for p in fig6), fig6
    assert any(p.startswith("colour:") and "colours" in p for p in fig6), fig6  # meg: 3
    fig7 = check(old.fig_vs_snr(rows, "fid", None))
    assert any(p.startswith("legend:") for p in fig7) and any(
        p.startswith("colour:") for p in fig7), fig7
    compute = check(old.plot_quality_vs_compute(rows, "unused.png", snrs=[-10.0, 0.0, 10.0]))
    assert sum(p.startswith("text:") for p in compute) >= 10, compute
    assert any(p.startswith("cap:") for p in compute), compute
    assert any("unlabelled" in p for p in compute), compute  # the frontier
    assert any(p.startswith("colour:") for p in compute), compute


def test_the_colours_come_from_the_registry():
    from meg_lightning.evaluation.figures_common import Style, family_colours, scheme_colour
    from meg_lightning.schemes import SCHEMES, BaseScheme

    colours = family_colours()
    assert colours["meg"] == SCHEMES["meg"].hue and scheme_colour("meg+dm") == colours["meg"]
    assert len({mcolors.to_rgb(c) for c in colours.values()}) == len(colours)

    @SCHEMES.register("figtest-clash")
    class Clash(BaseScheme):  # a new scheme that kept the default hue (centralized's grey)
        order = 99

    try:
        got = family_colours()
        assert mcolors.to_rgb(got["figtest-clash"]) not in {
            mcolors.to_rgb(c) for n, c in got.items() if n != "figtest-clash"}
        assert {n: c for n, c in got.items() if n != "figtest-clash"} == colours
    finally:
        SCHEMES.unregister("figtest-clash")
    # a rate looks the same in every figure: its marker and line style follow its rank
    style = Style([0.25, 0.5, 0.75])
    a, b = style.line("meg fc=0.5"), style.line("linear fc=0.5")
    assert (a["marker"], a["ls"]) == (b["marker"], b["ls"]) and a["color"] != b["color"]
    assert style.line("meg fc=0.25")["marker"] != a["marker"]
    assert style.line("meg+dm fc=0.5")["mfc"] == "white"  # the generative receiver: hollow


def _fig10(rows, captured, tmp_path):
    from meg_lightning.evaluation.figures_tradeoff import fig_power

    paths = fig_power(rows, tmp_path / "fig10_fid_power")
    assert [p.suffix for p in paths] == [".png", ".pdf"]
    return captured["fig10_fid_power"]


def _panels(fig):
    return [ax for ax in fig.axes if ax.get_xscale() == "log"]


def _policy(lbl: str) -> str:
    """The policy of a Fig. 10 legend label: ``ppo (learned), +0.3 to +0.4 dB`` -> ``ppo``."""
    return lbl.split(",")[0].split(" (")[0]


def test_fig10_new_format_three_panels_per_policy_with_bands(captured, tmp_path):
    from meg_lightning.evaluation.figures_tradeoff import fig10_setting, read_fig10

    rows = read_fig10(DATA / "fig10_new.csv")
    assert {r["num_blocks"] for r in rows} == {4.0, 8.0}
    assert fig10_setting(rows)[0][3] == "8"  # B = 8 has the most rows (20 against 8)
    fig = _fig10(rows, captured, tmp_path)
    assert check(fig) == []
    assert "not drawn: B=4 blocks" in fig.get_suptitle().replace("\n", " ")
    panels = _panels(fig)
    assert [ax.get_ylabel().split(",")[0] for ax in panels] == ["FID", "PSNR (dB)",
                                                                "semantic accuracy"]
    # the power saved against equal power (power_saved_db) is in the legend, per policy
    labels = {_policy(ln.get_label()): ln.get_label() for ln in panels[0].lines}
    assert labels == {"equal": "equal", "causal_dp": "causal_dp, +0.7 to +0.9 dB",
                      "oracle": "oracle (non-causal), +1.3 to +1.5 dB",
                      "ppo": "ppo (learned), +0.3 to +0.4 dB"}
    colours = {}
    for ax in panels:
        lines = {_policy(ln.get_label()): ln for ln in ax.lines}
        assert set(lines) == {"equal", "causal_dp", "oracle", "ppo"}
        assert all(len(ln.get_xdata()) == 5 for ln in lines.values())  # B = 8 only
        assert lines["oracle"].get_linestyle() == "--"
        assert {lines[k].get_linestyle() for k in ("equal", "causal_dp", "ppo")} == {"-"}
        for k, ln in lines.items():
            assert colours.setdefault(k, ln.get_color()) == ln.get_color()
        assert len(ax.collections) == 4  # one band per policy
        assert "P_{max}" in ax.get_xlabel() and "mW" in ax.get_xlabel()
        (top,) = ax.child_axes  # the average SNR of the budget, in dB
        assert "SNR (dB)" in top.get_xlabel()
        ticks = [(t.get_position()[0], t.get_text()) for t in top.get_xticklabels()]
        for p, text in ticks:  # P_max / (B N0) with B = 8, N0 = 1 mW
            if text:
                assert float(text.replace("\N{MINUS SIGN}", "-")) == pytest.approx(
                    10 * math.log10(p / 8), abs=1e-6)
    assert len(set(colours.values())) == 4
    # the colours are the policy's, whatever else the file holds and in whatever order
    plt_close(fig)
    captured.clear()
    fewer = [r for r in rows if r["policy"] != "causal_dp" and r["num_blocks"] == 8]
    for r in fewer:
        r["power_saved_db"] = math.nan
    random.Random(0).shuffle(fewer)
    fig2 = _fig10(fewer, captured, tmp_path)
    again = {ln.get_label(): ln.get_color() for ln in _panels(fig2)[0].lines}
    assert again == {"equal": colours["equal"], "oracle (non-causal)": colours["oracle"],
                     "ppo (learned)": colours["ppo"]}
    assert "not drawn" not in fig2.get_suptitle()


def test_fig10_reads_the_old_format_and_falls_back_without_images(captured, tmp_path):
    from meg_lightning.evaluation.figures_tradeoff import read_fig10

    fig = _fig10(read_fig10(DATA / "fig10_old.csv"), captured, tmp_path)
    assert check(fig) == []
    assert [ax.get_ylabel().split(",")[0] for ax in _panels(fig)] == ["FID", "PSNR (dB)"]
    assert {ln.get_label() for ln in _panels(fig)[0].lines} == {"equal", "ppo (learned)"}
    plt_close(fig)
    captured.clear()
    synthetic = tmp_path / "synthetic.csv"
    synthetic.write_text("p_max_mw,snr_db,policy,fid,psnr,latent_mse,expected_mse,n_images,"
                         "scheme,reward\n1,10,ppo,nan,nan,0.2,0.2,0,gaussian,latent_mse\n"
                         "1,10,oracle,nan,nan,0.1,0.1,0,gaussian,latent_mse\n"
                         "4,16,ppo,nan,nan,0.1,0.1,0,gaussian,latent_mse\n")
    fig = _fig10(read_fig10(synthetic), captured, tmp_path)
    assert check(fig) == []
    (panel,) = _panels(fig)
    assert panel.get_ylabel().startswith("latent MSE")
    bad = tmp_path / "bad.csv"
    bad.write_text("budget,policy\n1,ppo\n")
    with pytest.raises(ValueError, match="p_max_mw"):
        read_fig10(bad)


def plt_close(fig):
    import matplotlib.pyplot as plt

    plt.close(fig)
