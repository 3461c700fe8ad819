"""A study's summary as typed values: what its parent run records (bpexp/recording/study_record.py,
in the recorder process) and what the console prints (bpexp/study/summary.py builds it, reading
every trial back from Optuna). Plain data, no torch: it crosses to the recorder pickled."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional


@dataclass(frozen=True)
class TrialRow:
    """One trial as every record shows it."""

    number: int
    state: str  # Optuna's TrialState name
    outcome: str  # its Verdict (results/outcome.py), or "failed" (a dead worker's, a surplus one)
    value: Optional[float]  # Optuna's value: the median seed's final metric; None without one
    params: dict[str, Any]
    diverged_seeds: list[int]
    run_id: str  # its MLflow child run ("" if it has none)


@dataclass(frozen=True)
class Rechecked:
    """A re-checked trial (bpexp/study/recheck.py): its config over its own and the fresh seeds."""

    verdict: str
    value: Optional[float]  # the median over every seed; None if the median seed diverged
    worst: Optional[float]  # the worst seed, if every seed converged
    seeds: list[int]
    diverged_seeds: list[int]
    seed_values: dict[str, float]  # seed (as text: Optuna's JSON) -> its final metric
    params: dict[str, Any]
    study_value: Optional[float]  # its value in the study, on the study's seeds
    run_id: str


@dataclass
class StudySummary:
    study_name: str
    metric: str
    keys: list[str]  # the searched config keys
    trials: list[TrialRow]
    best_number: Optional[int]  # as study.best_trial: the lowest value, then the lowest number
    best_value: float  # NaN without a best trial
    best_params: dict[str, Any]
    best_config: Optional[dict]  # the best trial's train config, as plain data
    optuna_trials: list  # FrozenTrials, for the importances the recorder computes ([] when not drawn)
    stability: dict  # width -> results/stability.py's Stability
    counts: dict[str, int]  # verdict (and "failed") -> trials
    n_trials: int = 0  # sweep.n_trials as this run of the study had it (a top-up raises it)
    recheck: dict[int, Rechecked] = field(default_factory=dict)
    recheck_seeds: list[int] = field(default_factory=list)  # the fresh seeds of the re-check
    recommended_number: Optional[int] = None
    recommended_config: Optional[dict] = None
