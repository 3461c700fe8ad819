"""What became of a run or a trial: the one definition every record of bpexp is built from.

A seed *diverges* at the first epoch whose training loss leaves the finite range or exceeds
`train.diverge_above`; the population trainer stops it there (bpexp/training/divergence.py is the rule).
A trial trains one config on `sweep.seeds` init seeds. Its curve is, epoch by epoch, the
median over its seeds, a diverged seed counting as worse than any loss from the epoch it
diverged at: every point of it is a loss some seed measured, or +inf where the median seed
had diverged. The trial's value is the last point of that curve (of train_loss or test_loss,
as sweep.metric says), and `trial_outcome` reads one of four verdicts from the seeds:

- converged: every seed trained to the last epoch; value = their median final loss;
- partly diverged: some seeds diverged, but fewer than half, so the median seed converged and
  the value is still a measured loss (with 3 seeds: 1 diverged, value = the worse of the two
  others);
- diverged: the median seed diverged (with 3 seeds: 2 or 3 diverged); there is no value;
- not fit: no seed diverged, but the value stayed above a tenth of what a
  network that learned nothing scores (the loss of predicting the training targets' mean:
  NOT_FIT_FRACTION of `constant_loss`, i.e. R^2 below 0.9): a flat or half-drawn curve, too
  few units, or an lr too small for the epochs. It has a value and is ranked by it like the
  two above, but it is not called "converged" where a user reads "fit";
- pruned: the pruner stopped the trial; no final loss either.

A converged seed can still be *stuck*: trained to the end, no divergence, but caught in a
local minimum far above where the same config's other seeds end (`stuck_seeds`: more than
STUCK_RATIO times the config's median). Measured on the default data (docs/findings.md,
"Stuck seeds"; 64 unseen seeds per config, 1-8 units, lr 0.02-0.5): the seeds of a config that
fit end within ~3x of their median at lr >= 0.07 (within ~8x at the smallest lrs, where they
are still descending), while stuck ones sit 20x-950x above it (3 units, lr 0.3: 8 of 64 seeds
at MSE ~0.27, 365x the median 7.4e-4). 10x lies in that gap. Diverged and stuck seeds are the
seed *failures* a recommendation is judged by (bpexp/study/recheck.py).

A train run is the one-seed case. The CLI summary, the child runs' tags and metrics, the
parent's counts, trials.csv, `bpexp compare`, and Optuna's state and value all come from here:
converged and partly diverged trials are COMPLETE with their value; a diverged trial is PRUNED
(stopped early, no value) with user attribute bpexp.outcome=diverged and a violated constraint,
so that TPE and GP rank it below every trial with a value. Measured on the default study
(docs/findings.md, "Why a diverged trial is PRUNED"): told FAIL instead, as Optuna marks an objective that returns NaN, TPE
never sees those trials and 31 % of the trials diverge, against 20 % told PRUNED and
infeasible; partly diverged trials told infeasible too push TPE off the edge of stability,
where the best lr is (best 5-seed median 1.04e-3 against 7.42e-4).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Optional, Sequence

import numpy as np

from bpexp import names


class Verdict(str, Enum):
    """What became of a run or a trial. A str: it prints, formats, hashes, compares and goes
    into JSON, MLflow tags and Optuna attributes as its value ("partly diverged")."""

    CONVERGED = "converged"
    PARTLY_DIVERGED = "partly diverged"
    DIVERGED = "diverged"
    NOT_FIT = "not fit"
    PRUNED = "pruned"

    __hash__ = str.__hash__  # Enum's own hashes the member's name: "converged" would miss in a dict
    __format__ = str.__format__

    def __str__(self) -> str:
        return self.value


CONVERGED, PARTLY_DIVERGED, DIVERGED, NOT_FIT, PRUNED = Verdict
TRAINED = (CONVERGED, PARTLY_DIVERGED, NOT_FIT, DIVERGED)  # trained to an outcome: what sweep.n_trials counts
VALUED = (CONVERGED, PARTLY_DIVERGED, NOT_FIT)  # with a measured value: Optuna's COMPLETE trials
NOT_FIT_FRACTION = 0.1  # not fit: the value above this fraction of the constant prediction's loss
STUCK_RATIO = 10.0  # a stuck seed: its final loss above this multiple of its config's median
CONSTRAINT = "diverged"  # the trial's Optuna constraint: 1 for a diverged trial, feasible (0) otherwise


@dataclass(frozen=True)
class Curves:
    """A run's own curves, float64: epochs, train losses, test epochs, test losses (+inf where
    the median seed had diverged: such points are never recorded)."""

    epochs: np.ndarray
    train: np.ndarray
    test_epochs: np.ndarray
    test: np.ndarray
    sharpness_epochs: np.ndarray  # where sharpness (bpexp/training/sharpness.py) was measured
    sharpness: np.ndarray  # the median seed's, +inf where it had diverged

    @property
    def sharpness_init(self) -> Optional[float]:
        """Sharpness of the initial networks (median over seeds), if measured."""
        return float(self.sharpness[0]) if len(self.sharpness) and np.isfinite(self.sharpness[0]) else None

    @property
    def sharpness_end(self) -> Optional[float]:
        """Sharpness at the last epoch (median over seeds), if measured and not diverged."""
        done = len(self.sharpness) and self.sharpness_epochs[-1] == len(self.epochs) - 1
        return float(self.sharpness[-1]) if done and np.isfinite(self.sharpness[-1]) else None


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict
    seeds: tuple[int, ...]  # every seed, in training order
    diverged_seeds: tuple[int, ...]
    value: Optional[float]  # the last point of the metric's curve; None if it is not a measured loss
    seed_values: dict  # seed -> its final metric, for the seeds that converged
    curves: Curves

    @property
    def stuck_seeds(self) -> tuple[int, ...]:
        """The seeds that trained to the end far above the config's median (STUCK_RATIO): stuck
        in a local minimum. None without a value; none with a single seed (it is its median)."""
        if self.value is None:
            return ()
        return tuple(s for s, v in self.seed_values.items() if v > STUCK_RATIO * self.value)

    @property
    def failed_seeds(self) -> tuple[int, ...]:
        """Seeds a user would not want: diverged or stuck."""
        return self.diverged_seeds + self.stuck_seeds

    @property
    def mean(self) -> Optional[float]:
        """The mean final metric over the seeds; +inf if any seed diverged (its network is lost)."""
        if self.diverged_seeds:
            return math.inf
        return float(np.mean(list(self.seed_values.values()))) if self.seed_values else None

    def quantile(self, q: float) -> Optional[float]:
        """The q-quantile of the final metric over every seed, a diverged seed counting +inf:
        the higher of the two seeds it falls between (with 35 seeds, 0.9 is the 4th worst)."""
        if not self.seed_values:
            return None
        v = [*self.seed_values.values(), *[math.inf] * len(self.diverged_seeds)]
        return float(np.quantile(np.asarray(v), q, method="higher"))

    @property
    def spread(self) -> Optional[float]:
        """max - min of the converged seeds' final metric (with two or more of them)."""
        v = list(self.seed_values.values())
        return max(v) - min(v) if len(v) > 1 else None

    @property
    def label(self) -> str:
        """For people: 'converged', '1 of 3 seeds diverged', 'diverged (2 of 3 seeds)', 'pruned'."""
        k, n, j = len(self.diverged_seeds), len(self.seeds), len(self.stuck_seeds)
        stuck = f"{j} of {n} seeds stuck" if j else ""
        if self.verdict == PARTLY_DIVERGED:
            return f"{k} of {n} seeds diverged" + (f", {stuck}" if stuck else "")
        if self.verdict == DIVERGED and k < n:
            return f"diverged ({k} of {n} seeds)"
        return f"{self.verdict} ({stuck})" if stuck else self.verdict


def median_curves(results: Sequence) -> Curves:
    """Per-epoch medians over the seeds, a diverged seed's loss +inf from its divergence on.
    One seed: its own losses, so a train run's curve is its network's."""
    n = max(len(r.train_loss) for r in results)
    test_epochs = max((r.test_epochs for r in results), key=len)

    def stacked(values, axis_epochs):
        rows = np.full((len(results), len(axis_epochs)), np.nan)
        for i, r in enumerate(results):
            got = np.asarray(values(r), dtype=np.float64)
            rows[i, :len(got)] = got
            if r.status == "diverged":
                rows[i, np.asarray(axis_epochs) >= r.stopped_at] = np.inf
        return np.median(rows, axis=0)

    sharp_epochs = max((r.sharpness_epochs for r in results), key=len)
    return Curves(np.arange(n), stacked(lambda r: r.train_loss, np.arange(n)),
                  np.asarray(test_epochs), stacked(lambda r: r.test_loss, test_epochs),
                  np.asarray(sharp_epochs), stacked(lambda r: r.sharpness, sharp_epochs))


def trial_outcome(results: Sequence, metric: str, constant_loss: Optional[float] = None) -> Outcome:
    """The verdict over a trial's seeds (MemberResults of one config, seeds differing).
    constant_loss: the metric of the constant prediction (bpexp/training/data.py), for the
    not-fit verdict; None: never "not fit"."""
    seeds = tuple(r.member.seed for r in results)
    diverged = tuple(r.member.seed for r in results if r.status == "diverged")
    curves = median_curves(results)
    finals = {r.member.seed: final_metric(r, metric) for r in results if r.status == "finished"}
    if any(r.status == "pruned" for r in results):
        return Outcome(PRUNED, seeds, diverged, None, {}, curves)
    last = float((curves.train if metric == "train_loss" else curves.test)[-1])
    if not math.isfinite(last):  # the median seed diverged
        return Outcome(DIVERGED, seeds, diverged, None, finals, curves)
    if diverged:  # before "not fit": a seed that diverged says where the lr stops training (results/stability.py)
        return Outcome(PARTLY_DIVERGED, seeds, diverged, last, finals, curves)
    if constant_loss is not None and last > NOT_FIT_FRACTION * constant_loss:
        return Outcome(NOT_FIT, seeds, diverged, last, finals, curves)
    return Outcome(CONVERGED, seeds, diverged, last, finals, curves)


def recheck_rank(failed: int, mean: Optional[float], number: int) -> tuple:
    """Where a re-checked config ranks, best first (bpexp/study/recheck.py: best_of, and
    recheck.csv): the fewest failed seeds (diverged or stuck), then the lowest mean over its
    seeds, then the trial number."""
    return failed, math.inf if mean is None else mean, number


def final_metric(result, metric: str) -> float:
    return float(result.train_loss[-1] if metric == "train_loss" else result.test_loss[-1])


# ------------------------------------------------------------------ Optuna's view of it
def optuna_state(outcome: Outcome):
    """(TrialState, value) to tell Optuna: a measured value, or none at all."""
    from optuna.trial import TrialState

    if outcome.verdict in (PRUNED, DIVERGED):
        return TrialState.PRUNED, None
    return TrialState.COMPLETE, outcome.value


def optuna_constraint(outcome: Outcome) -> float:
    """The trial's constraint CONSTRAINT: violated (1) by a diverged trial only."""
    return 1.0 if outcome.verdict == DIVERGED else 0.0


def optuna_attrs(outcome: Outcome) -> dict:
    """The user attributes that carry the verdict into Optuna (and back, for the summary), and
    sharpness at init and at the end (median over seeds; None where not measured), for the
    study's stability figure."""
    c = outcome.curves
    return {names.OUTCOME: outcome.verdict, names.DIVERGED_SEEDS: list(outcome.diverged_seeds),
            names.STUCK_SEEDS: list(outcome.stuck_seeds),
            names.SHARPNESS: [c.sharpness_init, c.sharpness_end]}


def verdict_of(trial) -> Optional[Verdict]:
    """A finished Optuna trial's verdict, as bpexp told it; None for a trial that failed (a
    dead worker's, a surplus one) or is still running."""
    from optuna.trial import TrialState

    if trial.state == TrialState.PRUNED:  # by the pruner, or stopped by divergence
        return Verdict(trial.user_attrs.get(names.OUTCOME, PRUNED))
    return Verdict(trial.user_attrs.get(names.OUTCOME, CONVERGED)) if trial.state == TrialState.COMPLETE else None
