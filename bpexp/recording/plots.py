"""The study-level figures on a sweep's parent run (per-run figures are SVG: bpexp/recording/svg.py).

Built on matplotlib's object API (Figure + Agg canvas, no pyplot): no global state. They are
drawn once per sweep, in the recorder process.
"""
from __future__ import annotations

import io
from typing import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

DPI = 100


def _frame(fig: Figure) -> None:
    # Fixed margins: tight_layout measures every text extent and costs more than drawing.
    fig.subplots_adjust(left=0.12, right=0.97, bottom=0.12, top=0.92)


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def loss_plot(curves: Sequence[tuple[str, np.ndarray, np.ndarray]], title: str, ylabel: str = "MSE") -> bytes:
    """Loss curves on a log scale; each curve is (label, epochs, losses)."""
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    for label, ep, loss in curves:
        ok = np.isfinite(loss) & (loss > 0)
        ax.plot(ep[ok], loss[ok], lw=1, label=label)
    if curves:  # none: every run diverged (no final curve to draw)
        ax.set_yscale("log")
        ax.legend(loc="upper right", fontsize=7)
    ax.set(xlabel="epoch", ylabel=ylabel, title=title)
    ax.grid(True, which="major", alpha=0.3)
    _frame(fig)
    return _png(fig)


def scatter_plot(x, y, color, xlabel: str, ylabel: str, clabel: str, title: str,
                 logx: bool = True, logy: bool = True, marks=None, partly=None) -> bytes:
    """One point per trial, coloured by a third quantity (e.g. objective vs lr by hidden units).
    marks = (x, color): points without a y (diverged runs), drawn as x along the top edge;
    partly = (x, y): trials some of whose seeds diverged (value over the others), as triangles."""
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    sc = ax.scatter(x, y, c=color, cmap="viridis", s=20)
    _partly_and_diverged(ax, logx, x, partly, marks[0] if marks is not None else ())
    fig.colorbar(sc, ax=ax, label=clabel)
    # A log axis needs a positive value to show (every run diverged: no y at all; the x of the
    # diverged marks still spans the lrs tried)
    if logx and any(v > 0 for v in [*x, *(marks[0] if marks is not None else ())]):
        ax.set_xscale("log")
    if logy and any(v > 0 for v in [*y, *(partly[1] if partly is not None else ())]):
        ax.set_yscale("log")
    if not len(y) and not (partly is not None and len(partly[1])):  # no value to draw: no scale to read one off
        ax.set_yticks([])
        ax.text(0.5, 0.5, "no run has a final value (every one diverged)", transform=ax.transAxes,
                ha="center", va="center", fontsize=9, color="0.4")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def _partly_and_diverged(ax, logx: bool, x, partly, diverged_x) -> None:
    """Trials some of whose seeds diverged (open triangles at their value), and trials every
    seed of which diverged (red x along the top edge: they have no value to plot)."""
    labelled = False
    if partly is not None and len(partly[0]):
        ax.scatter(partly[0], partly[1], facecolors="none", edgecolors="tab:orange", marker="^", s=30,
                   label="some seeds diverged")
        labelled = True
    if len(diverged_x):
        ax.scatter(diverged_x, [0.97] * len(diverged_x), c="tab:red", marker="x", s=25,
                   transform=ax.get_xaxis_transform(), label="diverged (no value)")
        labelled = True
        xs = np.concatenate([np.asarray(x, dtype=float), np.asarray(diverged_x, dtype=float),
                             np.asarray(partly[0] if partly is not None else [], dtype=float)])
        xs = xs[np.isfinite(xs)]
        if len(xs):  # the marks' transform leaves the x limits to us
            ax.set_xlim(*((xs.min() / 1.5, xs.max() * 1.5) if logx else (xs.min() - 0.5, xs.max() + 0.5)))
    if labelled:
        ax.legend(loc="best", fontsize=7, framealpha=0.6)


def heatmap_plot(x, y, z, xlabel: str, ylabel: str, zlabel: str, title: str, bad=None) -> bytes:
    """Objective over two parameters: trials as points on a log-coloured map, interpolated only
    between trials near each other (`near_triangles`): where trials are sparse the map is blank."""
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    x, y, z = (np.asarray(a, dtype=float) for a in (x, y, z))
    lz = np.log10(np.clip(z, 1e-12, None))
    lx = np.log10(x)
    if len(x) >= 4 and np.ptp(lx) > 0 and np.ptp(y) > 0:
        try:
            cf = ax.tricontourf(near_triangles(lx, y), lz, levels=12, cmap="viridis_r")
            fig.colorbar(cf, ax=ax, label=f"log10 {zlabel}")
        except (ValueError, RuntimeError):  # degenerate triangulation (e.g. collinear points)
            pass
    ax.scatter(lx, y, c="k", s=6, label="converged")
    if bad is not None and len(bad[0]):  # trials with a diverged seed: (x, y)
        ax.scatter(np.log10(np.asarray(bad[0], dtype=float)), bad[1], c="tab:red", marker="x", s=20,
                   label="a seed diverged")
        ax.legend(loc="best", fontsize=7, framealpha=0.6)
    ax.set(xlabel=f"log10 {xlabel}", ylabel=ylabel, title=title)
    fig.tight_layout()
    return _png(fig)


def near_triangles(x, y, longest: float = 0.3):
    """The Delaunay triangles of the points, less those with an edge longer than `longest` of
    the plot's width or height (both scaled to 1): a colour there would be read off one or two
    trials far apart."""
    from matplotlib.tri import Triangulation

    sx, sy = (np.asarray(a, dtype=float) for a in (x, y))
    sx, sy = (sx - sx.min()) / np.ptp(sx), (sy - sy.min()) / np.ptp(sy)
    tri = Triangulation(sx, sy)
    corners = np.stack([sx[tri.triangles], sy[tri.triangles]], axis=-1)  # [T, 3, 2]
    edges = np.linalg.norm(corners - np.roll(corners, 1, axis=1), axis=-1).max(axis=1)
    return Triangulation(x, y, triangles=tri.triangles, mask=edges > longest)


def bar_plot(names: Sequence[str], values: Sequence[float], xlabel: str, title: str) -> bytes:
    fig = Figure(figsize=(6, max(4.0, 0.6 + 0.4 * len(names))))  # the size of the other figures, at least
    ax = fig.add_subplot()
    ax.barh(list(names)[::-1], list(values)[::-1], color="tab:blue")
    ax.set(xlabel=xlabel, title=title)
    fig.tight_layout()
    return _png(fig)


def history_plot(numbers, values, best, ylabel: str, title: str, partly=None, diverged=()) -> bytes:
    """Optimization history: each converged trial's value, the best so far, and the trials
    with diverged seeds (see _partly_and_diverged)."""
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    ax.scatter(numbers, values, s=12, label="converged trial")
    ax.step(numbers, best, where="post", color="tab:blue", label="best so far")
    _partly_and_diverged(ax, False, numbers, partly, diverged)
    if len(values) or (partly is not None and len(partly[1])):
        ax.set_yscale("log")
    ax.set(xlabel="trial number", ylabel=ylabel, title=title)
    ax.legend(loc="best", fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def boundary_plot(lr_ok, hidden_ok, lr_bad, hidden_bad, brackets: dict[float, tuple[float, float]]) -> bytes:
    """Where learning rates stop training: runs by (lr, hidden units), converged o / a seed
    diverged x, and per width the measured bracket [largest all-converged lr, smallest lr
    with a diverged seed] as a bar (red where the two overlap)."""
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    ax.scatter(lr_ok, hidden_ok, marker="o", s=16, c="tab:blue", label="every seed converged")
    ax.scatter(lr_bad, hidden_bad, marker="x", s=20, c="tab:red", label="a seed diverged")
    for i, (h, (lo, hi)) in enumerate(sorted(brackets.items())):
        ax.plot([lo, hi], [h, h], color="k" if lo <= hi else "tab:red", lw=3, alpha=0.6,
                solid_capstyle="butt", label="bracket" if i == 0 else None)
        ax.plot([lo, hi], [h, h], "|", color="k", ms=10)
    ax.set_xscale("log")
    ax.set(xlabel="learning rate", ylabel="hidden units (all layers)", title="divergence bracket per width")
    ax.legend(loc="best", fontsize=7)
    ax.grid(True, which="major", alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def stability_plot(found: dict) -> bytes:
    """Per width (hidden units in all), on one lr axis: the measured bracket as a bar from the
    largest lr at which every seed converged to the smallest at which a seed diverged (red
    where they overlap), 2 / sharpness of the initial networks (the prediction), and
    2 / sharpness at the end of each converged run (small dots)."""
    from bpexp.results.stability import units

    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.add_subplot()
    xs = {w: units(w) for w in found}
    labels = {"bar": "measured bracket", "v": "no run diverged: largest lr tried",
              "^": "no run converged: smallest lr tried"}

    def label(kind: str):
        return labels.pop(kind, None)  # each kind named once in the legend
    for w, s in found.items():
        if s.measured:
            ax.plot([xs[w]] * 2, [s.stable, s.unstable], color="k" if s.stable <= s.unstable else "tab:red",
                    lw=4, alpha=0.5, solid_capstyle="butt", label=label("bar"))
        elif s.stable is not None:
            ax.scatter([xs[w]], [s.stable], marker="v", c="k", s=18, label=label("v"))
        elif s.unstable is not None:
            ax.scatter([xs[w]], [s.unstable], marker="^", c="tab:red", s=18, label=label("^"))
    ends = [(xs[w], e) for w, s in found.items() for _, e in s.ends]
    if ends:
        ax.scatter(*zip(*ends), s=6, c="tab:green", alpha=0.5, label="2 / sharpness at the end (converged)")
    pred = sorted((xs[w], s.predicted_init) for w, s in found.items() if s.predicted_init)
    if pred:
        ax.plot(*zip(*pred), "o-", color="tab:blue", ms=4, lw=1, label="2 / sharpness at init (predicted)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set(xlabel="hidden units (all layers)", ylabel="learning rate",
           title="where the lr stops training: measured vs 2 / sharpness")
    ax.legend(loc="best", fontsize=7)
    ax.grid(True, which="major", alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def spread_plot(groups: Sequence[tuple[str, Sequence[float]]], ylabel: str, title: str,
                stuck_above: Sequence[float] = ()) -> bytes:
    """Each config's per-seed values as dots over a bar from the lowest to the highest, the
    median as a tick; diverged seeds (inf) as x at the right edge; with stuck_above (a bound
    per group), the seeds above their group's bound as red circles (stuck seeds)."""
    fig = Figure(figsize=(7, max(3.0, 0.8 + 0.4 * len(groups))))
    ax = fig.add_subplot()
    gone, stuck_drawn = [], False
    for i, (_, values) in enumerate(groups):
        every = np.asarray(values, dtype=float)
        v = every[np.isfinite(every) & (every > 0)]
        gone += [i] * int(np.sum(np.isinf(every)))
        if len(v):
            ax.plot([v.min(), v.max()], [i, i], color="0.7", lw=3)
            high = v > stuck_above[i] if i < len(stuck_above) else np.zeros(len(v), bool)
            ax.scatter(v[~high], [i] * int(np.sum(~high)), s=14, c="tab:blue", zorder=3)
            if high.any():
                ax.scatter(v[high], [i] * int(np.sum(high)), s=30, facecolors="none", edgecolors="tab:red",
                           zorder=4, label="a seed stuck" if not stuck_drawn else None)
                stuck_drawn = True
        median = np.median(every)  # a diverged seed (inf) counts as worse than any loss
        if np.isfinite(median):
            ax.scatter([median], [i], s=30, marker="|", c="k", zorder=4)
    if gone:  # diverged seeds: a red x at the right edge of their row
        ax.scatter([0.98] * len(gone), gone, c="tab:red", marker="x", s=25, zorder=4,
                   transform=ax.get_yaxis_transform(), label="a seed diverged")
    if gone or stuck_drawn:  # beside the plot: inside it would cover seeds
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)
    ax.set_yticks(range(len(groups)), [name for name, _ in groups], fontsize=7)
    ax.invert_yaxis()
    finite = [v for _, values in groups for v in values if np.isfinite(v) and v > 0]
    if finite:
        ax.set_xscale("log")
    else:  # every seed diverged: no loss to draw (a log axis of nothing is an error)
        ax.set_xticks([])
        ax.text(0.5, 0.5, "every seed diverged: no final loss", transform=ax.transAxes, ha="center", va="center")
    if finite and max(finite) / min(finite) < 100:  # under two decades: no power of ten in range to label
        from matplotlib.ticker import FormatStrFormatter, LogLocator

        subs = np.arange(1.0, 10.0) if max(finite) / min(finite) < 10 else (1.0, 2.0, 3.0, 5.0)
        ax.xaxis.set_major_locator(LogLocator(subs=subs))
        ax.xaxis.set_major_formatter(FormatStrFormatter("%.2g"))
    ax.xaxis.set_minor_formatter(NullFormatter())  # a narrow range would label every minor tick
    ax.set(xlabel=ylabel, title=title)
    ax.grid(True, which="major", axis="x", alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def study_figures(trials: Sequence[dict], keys: Sequence[str], metric: str,
                  importances: dict) -> dict[str, bytes]:
    """The parent run's figures: every trial plotted as its verdict says (bpexp/results/outcome.py)."""
    files = {}
    ok = [t for t in trials if t.outcome in ("converged", "not fit")]  # every seed trained to the end
    partly = [t for t in trials if t.outcome == "partly diverged"]
    diverged = [t for t in trials if t.outcome == "diverged"]
    ylabel = f"final {metric} (median over seeds)"
    if ok or partly or diverged:
        values = [t.value for t in ok]
        files["plots/optimization_history.png"] = history_plot(
            [t.number for t in ok], values, np.minimum.accumulate(values) if values else [], ylabel,
            f"history: {len(ok)} converged, {len(partly)} partly diverged, {len(diverged)} diverged",
            partly=([t.number for t in partly], [t.value for t in partly]),
            diverged=[t.number for t in diverged])
    x_key = next((k for k in keys if k == "train.lr"), keys[0])
    c_key = next((k for k in keys if k != x_key), None)
    has = lambda t: x_key in t.params and (c_key is None or c_key in t.params)  # noqa: E731
    pts, half, gone = [t for t in ok if has(t)], [t for t in partly if has(t)], [t for t in diverged if has(t)]
    numeric = lambda ts, k: all(isinstance(t.params[k], (int, float)) for t in ts)  # noqa: E731
    if pts and numeric(pts + half + gone, x_key):
        xs = [t.params[x_key] for t in pts]
        cs = [t.params[c_key] if c_key else t.number for t in pts]
        numeric_c = c_key is None or numeric(pts + half + gone, c_key)
        logx = min(t.params[x_key] for t in pts + half + gone) > 0
        files[f"plots/objective_vs_{x_key}.png"] = scatter_plot(
            xs, [t.value for t in pts], cs if numeric_c else list(range(len(cs))), x_key, ylabel,
            c_key or "trial number", f"final {metric} vs {x_key}", logx=logx,
            marks=([t.params[x_key] for t in gone], None),
            partly=([t.params[x_key] for t in half], [t.value for t in half]))
        if c_key and numeric_c and logx:
            bad = half + gone
            files[f"plots/heatmap_{x_key}_x_{c_key}.png"] = heatmap_plot(
                xs, cs, [t.value for t in pts], x_key, c_key, metric,
                f"final {metric} over {x_key} x {c_key}",
                bad=([t.params[x_key] for t in bad], [t.params[c_key] for t in bad]))
    if importances:
        files["plots/param_importances.png"] = bar_plot(list(importances), list(importances.values()),
                                                        f"importance for the final {metric} (PED-ANOVA, as optuna-dashboard)",
                                                        "parameter importances (trials with a value)")
    return files
