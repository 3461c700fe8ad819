"""A study's summary as typed values: what its parent run records (bpexp/recording/study_record.py,
in the recorder process) and what the console prints (bpexp/study/summary.py builds it, reading
every trial back from Optuna). Plain data, no torch: it crosses to the recorder pickled."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from bpexp.results.outcome import NOT_FIT, STUCK_RATIO, recheck_rank


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
    worst: Optional[float]  # the worst seed, if no seed diverged
    seeds: list[int]
    diverged_seeds: list[int]
    seed_values: dict[str, float]  # seed (as text: Optuna's JSON) -> its final metric
    params: dict[str, Any]
    study_value: Optional[float]  # its value in the study, on the study's seeds
    run_id: str
    mean: Optional[float] = None  # the mean over every seed, if no seed diverged: what the recommendation minimises
    q90: Optional[float] = None  # the 90th percentile over every seed, if finite
    stuck_seeds: list[int] = field(default_factory=list)  # stuck far above the median (results/outcome.py)
    neighbour_of: Optional[int] = None  # a trial the study's end tried next to this best trial (study/neighbours.py)
    final: bool = False  # trained in the re-check's final round too (its figures are over all its seeds)

    def label(self, number: int) -> str:
        """'#31', or '#31 (next to #12)' for a neighbour trial."""
        return f"#{number}" + (f" (next to #{self.neighbour_of})" if self.neighbour_of is not None else "")

    @property
    def failed(self) -> int:
        """Seeds that failed: diverged or stuck (the recommendation's first criterion)."""
        return len(self.diverged_seeds) + len(self.stuck_seeds)

    def failures(self) -> str:
        """In words: '0 of 35 seeds failed', '1 of 35 seeds stuck (at 0.271)', '2 of 35 diverged, 1 stuck'."""
        n, parts = len(self.seeds), []
        if self.diverged_seeds:
            parts.append(f"{len(self.diverged_seeds)} diverged")
        if self.stuck_seeds:
            at = sorted(self.seed_values[str(s)] for s in self.stuck_seeds)
            parts.append(f"{len(self.stuck_seeds)} stuck (at {at[0]:.3g}" + (f"-{at[-1]:.3g})" if len(at) > 1 else ")"))
        return f"0 of {n} seeds failed" if not parts else f"{self.failed} of {n} seeds failed: " + ", ".join(parts)

    def describe(self) -> str:
        """Its figures over its seeds, in one line: 'median 7.22e-04, mean 7.5e-04, 90th
        percentile 9.1e-04, worst 1.5e-03; 0 of 35 seeds failed'."""
        if self.value is None:
            return f"the median seed diverged; {self.failures()}"
        figures = [f"median {self.value:.3g}", *([f"mean {self.mean:.3g}"] if self.mean is not None else []),
                   *([f"90th percentile {self.q90:.3g}"] if self.q90 is not None else []),
                   *([f"worst {self.worst:.3g}"] if self.worst is not None else [])]
        return ", ".join(figures) + "; " + self.failures()


def recheck_candidates(recheck: dict[int, "Rechecked"]) -> str:
    """Which trials were re-checked, in words (bpexp/study/recheck.py and neighbours.py)."""
    return "the best of each config apart from the lr" + (
        " and the trials next to the best ones" if any(r.neighbour_of is not None for r in recheck.values()) else "")


RECHECK_RULE = (f"the fewest failed seeds (diverged, or stuck above {STUCK_RATIO:g}x the config's median), then the lowest "
                "mean loss over the seeds; a config that does not fit at all last")


def ranked(recheck: dict[int, Rechecked]) -> list[tuple[int, Rechecked]]:
    """The re-checked trials in the order the recommendation ranks them (bpexp/study/recheck.py:
    best_of): the final round's first, those whose median seed diverged last."""
    return sorted(recheck.items(), key=lambda kv: (not kv[1].final, kv[1].value is None, kv[1].verdict == NOT_FIT,
                                                   *recheck_rank(kv[1].failed, kv[1].mean, kv[0])))


def seed_span(seeds: list[int]) -> str:
    """'102-133', '102', or '' for none."""
    return f"{seeds[0]}-{seeds[-1]}" if len(seeds) > 1 else str(seeds[0]) if seeds else ""


def seed_range(seeds: list[int]) -> str:
    return f"seeds {seed_span(seeds)}" if len(seeds) > 1 else f"seed {seed_span(seeds)}"


def recheck_rounds(summary: "StudySummary") -> str:
    """The re-check's rounds in words: 'on 35 seeds each (the study's and 32 fresh ones, seeds
    102-133); the best 3 again on 96 more (seeds 134-229)'."""
    fresh, final = summary.recheck_seeds, summary.final_seeds
    first = min(len(r.seeds) for r in summary.recheck.values())
    out = f"on {first} seeds each (the study's and {len(fresh)} fresh ones, {seed_range(fresh)})"
    finalists = sum(r.final for r in summary.recheck.values())
    if finalists and final:
        entered = summary.final_first if 0 < summary.final_first < finalists else finalists
        out += f"; the best {entered} again on {len(final)} more ({seed_range(final)})"
        if entered < finalists:  # recheck.challengers
            out += f", and as the best of them failed a seed, the next {finalists - entered} that had failed none"
    return out


def recommended_by(summary: "StudySummary") -> str:
    """The rule, and which trials it chose among."""
    finalists = [r for r in summary.recheck.values() if r.final]
    return RECHECK_RULE + (f", of the {len(finalists)} trained on {len(finalists[0].seeds)} seeds" if finalists else "")


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
    recheck_seeds: list[int] = field(default_factory=list)  # the fresh seeds of the re-check's first round
    final_seeds: list[int] = field(default_factory=list)  # ... and of its final round, when it had one
    final_first: int = 0  # sweep.recheck_final: the final round's first entrants (more join if its best failed)
    recommended_number: Optional[int] = None
    recommended_config: Optional[dict] = None

    @property
    def fresh_seeds(self) -> set[int]:
        """Every fresh seed of the re-check, both rounds'."""
        return set(self.recheck_seeds + self.final_seeds)
