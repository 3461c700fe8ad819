"""A minimal SVG chart: lines and points on linear or log axes, with ticks and a legend.

Why not matplotlib here: a sweep records two figures per trial, and matplotlib spends
60-80 ms laying out and rasterising each one (measured: benchmarks/recording.py), more than
training the trial. Writing the SVG text directly takes well under a millisecond, the files
are small, and the MLflow UI displays .svg artifacts like images. Study-level figures, drawn
once per sweep, still use matplotlib (bpexp/recording/plots.py).
"""
from __future__ import annotations

import math
from html import escape
from typing import Optional, Sequence

import numpy as np

W, H = 640, 420
LEFT, RIGHT, TOP, BOTTOM = 70, 20, 40, 50
LEGEND = 170  # the legend's column, right of the plot: it never covers a curve
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2")


def _nice_ticks(lo: float, hi: float, n: int = 6) -> list[float]:
    """About n round-numbered ticks (steps of 1, 2 or 5 times a power of ten) in [lo, hi]."""
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step) * step
    return [start + i * step for i in range(int((hi - start) / step + 1e-9) + 1)]


def _fmt(v: float) -> str:
    return f"{v:.4g}"


class Chart:
    """Collects series, then `render()` returns the SVG document as text."""

    def __init__(self, title: str, xlabel: str, ylabel: str, logy: bool = False, logx: bool = False):
        self.title, self.xlabel, self.ylabel, self.logy, self.logx = title, xlabel, ylabel, logy, logx
        self.series: list[tuple[str, str, np.ndarray, np.ndarray, str, float]] = []

    def line(self, x, y, label: str, color: Optional[str] = None, width: float = 1.5) -> "Chart":
        """A line; series drawn later lie on top (draw what matters most last)."""
        return self._add("line", x, y, label, color, width)

    def points(self, x, y, label: str, color: Optional[str] = None) -> "Chart":
        return self._add("points", x, y, label, color, 1.5)

    def _add(self, kind, x, y, label, color, width) -> "Chart":
        x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
        ok = np.isfinite(x) & np.isfinite(y)
        if self.logy:
            ok &= y > 0
        if self.logx:
            ok &= x > 0
        self.series.append((kind, label, x[ok], y[ok], color or COLORS[len(self.series) % len(COLORS)], width))
        return self

    def _axis(self, values: list[np.ndarray], log: bool, size: int, flip: bool):
        """Map data -> pixels along one axis; returns (mapping, ticks)."""
        allv = np.concatenate(values) if values and sum(v.size for v in values) else np.array([0.0, 1.0])
        t = np.log10(allv) if log else allv
        lo, hi = float(t.min()), float(t.max())
        if hi - lo < 1e-12:
            lo, hi = lo - 0.5, hi + 0.5
        pad = 0.04 * (hi - lo)
        lo, hi = lo - pad, hi + pad
        if log:
            ticks = [10.0**e for e in range(math.ceil(lo), math.floor(hi) + 1)] or [10**lo]
        else:
            ticks = _nice_ticks(lo, hi)

        def to_px(v):
            u = (np.log10(v) if log else np.asarray(v)) - lo
            frac = u / (hi - lo)
            return (1 - frac) * size if flip else frac * size

        return to_px, ticks

    def render(self) -> str:
        pw, ph = W - LEFT - RIGHT - (LEGEND if self.series else 0), H - TOP - BOTTOM
        fx, xticks = self._axis([s[2] for s in self.series], self.logx, pw, flip=False)
        fy, yticks = self._axis([s[3] for s in self.series], self.logy, ph, flip=True)
        out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
               'font-family="sans-serif" font-size="12">',
               f'<rect width="{W}" height="{H}" fill="white"/>',
               f'<text x="{W / 2}" y="22" text-anchor="middle" font-size="14">{escape(self.title)}</text>',
               f'<g transform="translate({LEFT},{TOP})">',
               f'<rect width="{pw}" height="{ph}" fill="none" stroke="#444"/>']
        for v in xticks:
            px = float(fx(v))
            out.append(f'<line x1="{px:.1f}" x2="{px:.1f}" y1="0" y2="{ph}" stroke="#e5e5e5"/>'
                       f'<text x="{px:.1f}" y="{ph + 16}" text-anchor="middle">{_fmt(v)}</text>')
        for v in yticks:
            py = float(fy(v))
            out.append(f'<line x1="0" x2="{pw}" y1="{py:.1f}" y2="{py:.1f}" stroke="#e5e5e5"/>'
                       f'<text x="-6" y="{py + 4:.1f}" text-anchor="end">{_fmt(v)}</text>')
        for kind, label, x, y, color, width in self.series:
            px, py = fx(x), fy(y)
            if kind == "line" and len(x) > 1:
                keep = simplified(px, py)
                pts = " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(px[keep], py[keep]))
                out.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="{width}"/>')
            elif kind == "points" or len(x) == 1:
                out += [f'<circle cx="{a:.1f}" cy="{b:.1f}" r="3" fill="{color}"/>' for a, b in zip(px, py)]
        for i, (kind, label, *_, color, width) in enumerate(self.series):  # the legend, right of the plot
            y0, x0 = 14 + 16 * i, pw + 10
            mark = (f'<line x1="{x0}" x2="{x0 + 20}" y1="{y0 - 4}" y2="{y0 - 4}" stroke="{color}" '
                    f'stroke-width="{max(2.0, width)}"/>'
                    if kind == "line" else f'<circle cx="{x0 + 10}" cy="{y0 - 4}" r="3" fill="{color}"/>')
            out.append(mark + f'<text x="{x0 + 26}" y="{y0}" font-size="11">{escape(label)}</text>')
        out.append('</g>')
        out.append(f'<text x="{LEFT + pw / 2}" y="{H - 12}" text-anchor="middle">{escape(self.xlabel)}</text>')
        out.append(f'<text transform="translate(16,{TOP + ph / 2}) rotate(-90)" text-anchor="middle">'
                   f'{escape(self.ylabel)}</text>')
        out.append("</svg>")
        return "\n".join(out)


TOLERANCE_PX = 0.25  # a point closer than this to the line through its neighbours kept is not drawn


def simplified(px: np.ndarray, py: np.ndarray, tol: float = TOLERANCE_PX, splits: int = 200) -> np.ndarray:
    """Which points of a polyline (in pixels) to draw: Ramer-Douglas-Peucker, so that no
    dropped point lies more than `tol` pixels from the line drawn, i.e. the same picture. A
    smooth loss curve keeps a few dozen points. After `splits` splits (a curve that oscillates,
    whose every point counts) the spans left keep every point: the time stays bounded (~2 ms a
    curve), only the file is larger (docs/findings.md, "Bytes per trial")."""
    n = len(px)
    keep = np.zeros(n, dtype=bool)
    keep[[0, n - 1]] = True
    spans = [(0, n - 1)]
    while spans:
        if splits == 0:
            for i, j in spans:
                keep[i:j + 1] = True
            break
        splits -= 1
        i, j = spans.pop()
        if j - i < 2:
            continue
        dx, dy = px[j] - px[i], py[j] - py[i]
        d = np.abs(dy * (px[i + 1:j] - px[i]) - dx * (py[i + 1:j] - py[i])) / max(math.hypot(dx, dy), 1e-9)
        k = int(np.argmax(d))
        if d[k] > tol:
            m = i + 1 + k
            keep[m] = True
            spans += [(i, m), (m, j)]
    return keep


def fit_chart(x_test: Sequence, y_test: Sequence, x: Sequence, y: Sequence,
              preds: Sequence[tuple[str, Sequence]], title: str) -> str:
    """The seed's figure: truth on the dense grid, the training points, each network's fit
    (one line per init seed of a trial)."""
    chart = Chart(title, "x", "y").line(x_test, y_test, "truth", "#555555")
    for i, (label, pred) in enumerate(preds):
        chart.line(x_test, pred, label, NETWORK_COLORS[i % len(NETWORK_COLORS)])
    return chart.points(x, y, "training points", "#1f77b4").render()


def prediction_chart(y: Sequence, y_test: Sequence, preds: Sequence[tuple[str, Sequence, Sequence]], title: str) -> str:
    """Predicted vs actual; a perfect fit lies on the diagonal. preds: (label, predicted on the
    training rows, predicted on the test rows), one per init seed of a trial."""
    lo = float(min(np.min(y), np.min(y_test)))
    hi = float(max(np.max(y), np.max(y_test)))
    chart = Chart(title, "actual", "predicted").line([lo, hi], [lo, hi], "perfect fit", "#555555")
    for i, (label, pred, pred_test) in enumerate(preds):
        chart.points(np.concatenate([y, y_test]), np.concatenate([pred, pred_test]), f"{label}: all rows",
                     NETWORK_COLORS[i % len(NETWORK_COLORS)])
    return chart.render()


NETWORK_COLORS = ("#d62728", "#ff7f0e", "#9467bd", "#2ca02c", "#8c564b", "#e377c2")


def loss_chart(curves: Sequence[tuple], title: str, max_points: int = 1000) -> str:
    """Loss curves on a log scale, each (label, epochs, losses[, color]); long curves are
    thinned to max_points (first and last kept)."""
    chart = Chart(title, "epoch", "MSE", logy=True)
    for label, ep, loss, *color in curves:
        ep, loss = np.asarray(ep), np.asarray(loss)
        if len(ep) > max_points:
            keep = np.unique(np.append(np.linspace(0, len(ep) - 1, max_points).astype(int), len(ep) - 1))
            ep, loss = ep[keep], loss[keep]
        chart.line(ep, loss, label, *color)
    return chart.render()
