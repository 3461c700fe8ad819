"""Where the learning rate stops training, per network width: measured, and predicted by
sharpness (bpexp/training/sharpness.py).

Measured: the bracket [largest lr at which every seed converged, smallest lr at which a seed
diverged] over the runs (or a study's trials) of one width, verdicts as bpexp/results/outcome.py
tells them. Predicted: gradient descent is stable near a point only while lr < 2 / lambda_max
there, so 2 / lambda_max of the initial networks (median over the runs of the width; it
depends on the width and the seeds, not on the lr) predicts the edge before any training,
and 2 / lambda_max at the end of a converged run says how close to its own edge it ended:
down to its lr where sharpness rose to the edge of stability (Cohen et al., 2021). The table
shows it for the converged run with the largest lr, the one closest to the edge; the figure
shows every converged run's.
One definition for the study's parent run (its figure and stability.csv), the console and
`bpexp compare`.
"""
from __future__ import annotations

import csv
import io
import json
import math
import statistics
from dataclasses import dataclass
from typing import Iterable, Optional

from bpexp.results.outcome import CONVERGED, DIVERGED, NOT_FIT, PARTLY_DIVERGED


@dataclass(frozen=True)
class Point:
    """One run or trial: its width as recorded (model.hidden: "4", "[16, 16]"), lr, verdict,
    and sharpness at init and at the end (None where not measured)."""

    width: str
    lr: float
    verdict: str
    sharpness_init: Optional[float] = None
    sharpness_end: Optional[float] = None


@dataclass
class Stability:
    stable: Optional[float]  # largest lr at which every seed converged
    unstable: Optional[float]  # smallest lr at which a seed diverged
    n_stable: int
    n_unstable: int
    predicted_init: Optional[float]  # 2 / median lambda_max of the initial networks
    predicted_end: Optional[float]  # 2 / lambda_max at the end of the converged run with the largest lr
    ends: tuple = ()  # (lr, 2 / lambda_max at the end) of each converged run

    @property
    def measured(self) -> bool:
        return self.stable is not None and self.unstable is not None

    def describe(self) -> str:
        if not self.measured:  # one side of the edge was never tried: say which, and how far the other went
            if self.unstable is None and self.stable is not None:
                return (f"every run converged ({self.n_stable}, up to lr {self.stable:.3g}): the edge lies above, "
                        "untried")
            if self.stable is None and self.unstable is not None:
                return (f"a seed diverged in every run ({self.n_unstable}, from lr {self.unstable:.3g}): the edge "
                        "lies below, untried")
            return "no run converged or diverged (only pruned or failed runs)"
        text = (f"stable up to lr {self.stable:.3g} ({self.n_stable} converged), "
                f"a seed diverges from lr {self.unstable:.3g} ({self.n_unstable} run{'s' if self.n_unstable != 1 else ''})")
        if self.stable > self.unstable:
            text += ": the two overlap, so the edge depends on the seed"
        return text


def units(width: str) -> float:
    """Hidden units in all: "4" -> 4, "[16, 16]" -> 32 (NaN if unreadable)."""
    try:
        w = json.loads(width)
    except (TypeError, ValueError):
        return math.nan
    return float(sum(w) if isinstance(w, list) else w)


def width_of(hidden) -> str:
    """model.hidden as MLflow's param records it: 4 -> "4", [16, 16] -> "[16, 16]"."""
    return json.dumps(list(hidden)) if isinstance(hidden, (list, tuple)) else str(hidden)


def per_width(points: Iterable[Point]) -> dict[str, Stability]:
    """The measured bracket and the predictions for each width (pruned runs say nothing)."""
    by: dict[str, list[Point]] = {}
    for p in points:
        if p.verdict in (CONVERGED, NOT_FIT, PARTLY_DIVERGED, DIVERGED):
            by.setdefault(p.width, []).append(p)
    out = {}
    for w, ps in by.items():
        good = [p.lr for p in ps if p.verdict in (CONVERGED, NOT_FIT)]  # every seed trained to the end
        bad = [p.lr for p in ps if p.verdict in (DIVERGED, PARTLY_DIVERGED)]
        init = [p.sharpness_init for p in ps if _positive(p.sharpness_init)]
        ends = tuple((p.lr, 2 / p.sharpness_end) for p in ps if p.verdict in (CONVERGED, NOT_FIT) and _positive(p.sharpness_end))
        out[w] = Stability(max(good) if good else None, min(bad) if bad else None, len(good), len(bad),
                           2 / statistics.median(init) if init else None, max(ends)[1] if ends else None, ends)
    return dict(sorted(out.items(), key=lambda kv: (units(kv[0]), kv[0])))


def _positive(v: Optional[float]) -> bool:
    return v is not None and math.isfinite(v) and v > 0


HEADING = ("where the learning rate stops training, per width: the measured bracket [largest lr at which "
           "every seed converged, smallest lr at which a seed diverged], beside 2 / sharpness (the largest "
           "stable lr of gradient descent) of the initial networks and at the end of the run at the largest "
           "stable lr:")


def lines(found: dict[str, Stability]) -> list[str]:
    """One line per width: the measured bracket, then the predictions."""
    out = []
    for w, s in found.items():
        predicted = [] if s.predicted_init is None else [f"{s.predicted_init:.3g} at init"]
        if s.predicted_end is not None:
            predicted.append(f"{s.predicted_end:.3g} at the end at lr {s.stable:.3g}")
        out.append(f"  {w} hidden: {s.describe()}" + (f"; 2/sharpness {', '.join(predicted)}" if predicted else ""))
    return out


def to_csv(found: dict[str, Stability]) -> str:
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    out.writerow(["width", "stable_lr", "unstable_lr", "n_stable", "n_unstable", "predicted_lr_init",
                  "predicted_lr_end_at_stable_lr"])
    r = lambda v: "" if v is None else repr(v)  # noqa: E731
    for w, s in found.items():
        out.writerow([w, r(s.stable), r(s.unstable), s.n_stable, s.n_unstable, r(s.predicted_init), r(s.predicted_end)])
    return buf.getvalue()
