"""The study-level figures on a sweep's parent run (per-run figures are SVG: bpexp/svg.py).

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


def loss_plot(curves: Sequence[tuple[str, np.ndarray, np.ndarray]], title: str) -> bytes:
    """Loss curves on a log scale; each curve is (label, epochs, losses)."""
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    for label, ep, loss in curves:
        ok = np.isfinite(loss) & (loss > 0)
        ax.plot(ep[ok], loss[ok], lw=1, label=label)
    ax.set_yscale("log")
    ax.set(xlabel="epoch", ylabel="MSE", title=title)
    ax.legend(loc="upper right", fontsize=7)
    ax.grid(True, which="major", alpha=0.3)
    _frame(fig)
    return _png(fig)


def scatter_plot(x, y, color, xlabel: str, ylabel: str, clabel: str, title: str,
                 logx: bool = True, logy: bool = True, marks=None) -> bytes:
    """One point per trial, coloured by a third quantity (e.g. objective vs lr by hidden units).
    marks = (x, color): points without a y (diverged runs), drawn as x along the top edge."""
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    sc = ax.scatter(x, y, c=color, cmap="viridis", s=20)
    if marks is not None and len(marks[0]):
        ax.scatter(marks[0], [0.97] * len(marks[0]), c="tab:red", marker="x", s=25,
                   transform=ax.get_xaxis_transform(), label="diverged")
        ax.legend(loc="lower right", fontsize=7)
        xs = np.concatenate([np.asarray(x, dtype=float), np.asarray(marks[0], dtype=float)])
        if logx:  # the marks' transform leaves the x limits to us
            ax.set_xlim(xs.min() / 1.5, xs.max() * 1.5)
    fig.colorbar(sc, ax=ax, label=clabel)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def heatmap_plot(x, y, z, xlabel: str, ylabel: str, zlabel: str, title: str) -> bytes:
    """Objective over two parameters: trials as points on a log-coloured interpolated map."""
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    x, y, z = (np.asarray(a, dtype=float) for a in (x, y, z))
    lz = np.log10(np.clip(z, 1e-12, None))
    lx = np.log10(x)
    if len(x) >= 4 and np.ptp(lx) > 0 and np.ptp(y) > 0:
        try:
            cf = ax.tricontourf(lx, y, lz, levels=12, cmap="viridis_r")
            fig.colorbar(cf, ax=ax, label=f"log10 {zlabel}")
        except (ValueError, RuntimeError):  # degenerate triangulation (e.g. collinear points)
            pass
    ax.scatter(lx, y, c="k", s=6)
    ax.set(xlabel=f"log10 {xlabel}", ylabel=ylabel, title=title)
    fig.tight_layout()
    return _png(fig)


def bar_plot(names: Sequence[str], values: Sequence[float], xlabel: str, title: str) -> bytes:
    fig = Figure(figsize=(6, 0.6 + 0.4 * max(1, len(names))))
    ax = fig.add_subplot()
    ax.barh(list(names)[::-1], list(values)[::-1], color="tab:blue")
    ax.set(xlabel=xlabel, title=title)
    fig.tight_layout()
    return _png(fig)


def history_plot(numbers, values, best, ylabel: str, title: str) -> bytes:
    """Optimization history: each trial's objective and the best so far."""
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    ax.scatter(numbers, values, s=12, label="trial")
    ax.step(numbers, best, where="post", color="tab:red", label="best so far")
    ax.set_yscale("log")
    ax.set(xlabel="trial", ylabel=ylabel, title=title)
    ax.legend(loc="best", fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def boundary_plot(lr_ok, hidden_ok, lr_bad, hidden_bad, boundary: dict[float, float]) -> bytes:
    """Where learning rates blow up: runs by (lr, hidden units), converged o / diverged x, and
    the boundary between them per width."""
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    ax.scatter(lr_ok, hidden_ok, marker="o", s=16, c="tab:blue", label="converged")
    ax.scatter(lr_bad, hidden_bad, marker="x", s=20, c="tab:red", label="diverged")
    if boundary:
        h = sorted(boundary)
        ax.plot([boundary[k] for k in h], h, "k--", lw=1, label="boundary")
    ax.set_xscale("log")
    ax.set(xlabel="learning rate", ylabel="hidden units (all layers)", title="divergence boundary")
    ax.legend(loc="best", fontsize=7)
    ax.grid(True, which="major", alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def spread_plot(groups: Sequence[tuple[str, Sequence[float]]], ylabel: str, title: str) -> bytes:
    """Each config's per-seed values as dots over a bar from the lowest to the highest."""
    fig = Figure(figsize=(6, 0.8 + 0.35 * max(1, len(groups))))
    ax = fig.add_subplot()
    for i, (_, values) in enumerate(groups):
        v = np.asarray(values, dtype=float)
        v = v[np.isfinite(v) & (v > 0)]
        if len(v):
            ax.plot([v.min(), v.max()], [i, i], color="0.7", lw=3)
            ax.scatter(v, [i] * len(v), s=14, c="tab:blue", zorder=3)
            ax.scatter([np.median(v)], [i], s=30, marker="|", c="k", zorder=4)
    ax.set_yticks(range(len(groups)), [name for name, _ in groups], fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())  # a narrow range would label every minor tick
    ax.set(xlabel=ylabel, title=title)
    ax.grid(True, which="major", axis="x", alpha=0.3)
    fig.tight_layout()
    return _png(fig)
