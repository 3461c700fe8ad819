"""When a seed has diverged: the rule the population trainer stops members by, and every record
reads (bpexp/results/outcome.py). numpy only, so that the recorder process, which reads
verdicts, never imports torch."""
from __future__ import annotations

import numpy as np


def diverged_mask(loss: np.ndarray, diverge_above: float) -> np.ndarray:
    """True where a training loss means divergence: NaN, infinite, or above diverge_above
    (train.diverge_above). A loss that large has left the region where the network still
    learns: past it, gradient descent's steps grow with the loss, and the float32 arithmetic
    reaches inf within a few epochs (the seed's post: lr 1.0 goes from 1e4 to NaN in ~10)."""
    return ~np.isfinite(loss) | (loss > diverge_above)
