"""A batch of trials: how big the next one is (`batch_plan`), asking for it (`ask`), and
training every seed of every trial in it as one population (`train_batch`). The loop that
runs batches is bpexp/study/session.py."""
from __future__ import annotations

import bisect
import math
import statistics
import warnings
from dataclasses import dataclass, field, replace
from typing import Callable, Mapping, Optional

import optuna
from optuna.trial import TrialState

from bpexp import names
from bpexp.config.schema import ParamSpec, SweepAppConfig, SweepConfig, TrainAppConfig
from bpexp.config.specs import member_of, train_spec
from bpexp.runtime.failpoints import failpoint
from bpexp.runtime.interrupts import interrupted
from bpexp.runtime.liveness import THIS_WORKER
from bpexp.study.mirror import MAX_BATCH, Mirror
from bpexp.study.search_space import searched, study_seeds, suggest
from bpexp.study.workers import counts, tell
from bpexp.training.population import MemberResult, train_population


@dataclass(frozen=True)
class BatchPlan:
    trials: int  # trials asked and trained together as one population
    overlapped: bool  # trained while the batch before is recorded, so told one batch late


SEQUENTIAL_BATCH = 4
POPULATION = 48


def batch_plan(s: SweepConfig, blind: float, trained_trials: int) -> BatchPlan:
    """How the next batch is run, once the study has `trained_trials` trained trials; `blind`:
    how many first trials the sampler draws without reading a result (search_space.blind_trials).

    sweep.batch_size=0 (automatic): SEQUENTIAL_BATCH trials at a time, each batch told before
    the next is asked, for the first sweep.sequential_trials trials; then trials whose seeds make
    a population of about POPULATION networks (at least 8 trials), overlapped. Why: told one
    batch of 16 late, TPE's first 32 trials are random search's (it starts from a random
    sampler); small batches told at once let it learn from the start (docs/findings.md, "How
    many trials"). The sampler's random start-up trials read no result, so they are one batch:
    the same trials, trained together (TPE's 8: one batch of 8 instead of two of 4, ~1.2 s
    less). A sampler that never reads a result (random, grid) has nothing to learn early:
    overlapped batches from the start. Bigger populations train faster per member
    (benchmarks/population.py, 2 cores: 16 members ~70 ms each, 48 ~30 ms, 100 ~20 ms), and
    overlapping hides the training behind the recording. A set sweep.batch_size: that many
    trials, overlapped from the first batch."""
    if s.batch_size:
        return BatchPlan(s.batch_size, True)
    if blind < math.inf and trained_trials < s.sequential_trials:
        first = min(int(blind), s.sequential_trials)  # the start-up trials: one batch
        return BatchPlan(max(SEQUENTIAL_BATCH, first - trained_trials), False)
    return BatchPlan(max(8, POPULATION // s.seeds), True)


@dataclass
class Batch:
    trials: list
    configs: dict = field(default_factory=dict)  # trial number -> its TrainAppConfig
    results: dict = field(default_factory=dict)  # trial number -> its seeds' MemberResults
    outcomes: dict = field(default_factory=dict)  # trial number -> its Outcome
    runs: dict = field(default_factory=dict)  # trial number -> future of its child run id


def ask(study: optuna.Study, space: Mapping[str, ParamSpec], n_trials: int, k: int, into: list,
        mirror: Optional[Mirror] = None) -> None:
    """Ask for k trials into `into`, keep those within n_trials; fail the surplus at once.
    An interrupt stops the asking: what was asked is in `into` for the interrupt to fail.
    With a mirror (TPE), their params are drawn there (bpexp/study/mirror.py).

    Workers sharing a study each ask for what they see missing, so together they may ask for
    more. Trial numbers are assigned atomically by the storage, which makes the rule exact: a
    trial is trained only if fewer than n_trials lower-numbered trials are trained or RUNNING.
    Then no study ever ends with more than n_trials trained trials.
    """
    asked = into
    copies = mirror.ask(k, interrupted) if mirror is not None and k <= MAX_BATCH and mirror.sync() else None
    draw: Callable = lambda t: [suggest(t, key, p) for key, p in searched(space)]  # noqa: E731
    with warnings.catch_warnings():  # our own Heartbeat class beats for ask/tell trials
        warnings.filterwarnings("ignore", "Heartbeat of storage is supposed to be used", UserWarning)
        for i in range(k if copies is None else len(copies)):  # fewer copies: an interrupt came
            failpoint("asking")
            if interrupted():
                return
            if copies is not None:  # drawn in the mirror, created here with its params and claimed
                asked.append(mirror.draw(copies[i], draw, {names.WORKER: THIS_WORKER}))
                continue
            asked.append(study.ask())
            asked[-1].set_user_attr(names.WORKER, THIS_WORKER)  # claimed at once (see fail_stale_trials)
    taken = sorted(t.number for t in study.get_trials(deepcopy=False) if t.state == TrialState.RUNNING or counts(t))
    keep = []
    for t in asked:
        if bisect.bisect_left(taken, t.number) < n_trials:
            draw(t)
            keep.append(t)
        else:
            t.set_user_attr(names.SURPLUS, True)  # asked by a worker that raced another; never trained
            tell(study, t, None, TrialState.FAIL)
    into[:] = keep


def train_batch(cfg: SweepAppConfig, trials: list[optuna.Trial], configs: dict[int, TrainAppConfig],
                data) -> dict[int, list[MemberResult]]:
    """Train every seed of every trial as one population, pruning from inside the loop."""
    seeds = study_seeds(cfg.train.seed, cfg.sweep.seeds)
    members, owner = [], []
    for t in trials:
        for s in seeds:
            members.append(replace(member_of(configs[t.number]), seed=s))
            owner.append(t)
    pruned_trials: set[int] = set()

    def on_report(epoch: int, live, losses) -> list[int]:
        """Median loss of each trial's live seeds -> the pruner; return members to stop."""
        by_trial: dict[int, list[float]] = {}
        for i, loss in zip(live, losses):
            by_trial.setdefault(owner[i].number, []).append(float(loss))
        stop = set()
        for t in trials:
            if t.number in by_trial and t.number not in pruned_trials:
                t.report(statistics.median(by_trial[t.number]), epoch)
                if t.should_prune():
                    pruned_trials.add(t.number)
                    stop.add(t.number)
        return [i for i in live if owner[i].number in stop]

    # Each report is a write to the study's storage: only worth it when a pruner reads them.
    pruning = cfg.sweep.pruner != "none"
    results = train_population(members, data, train_spec(cfg.train),
                               report_every=cfg.sweep.report_every if pruning else 0,
                               on_report=on_report if pruning else None)
    by_trial: dict[int, list[MemberResult]] = {t.number: [] for t in trials}
    for t, r in zip(owner, results):
        by_trial[t.number].append(r)
    return by_trial


def trial_name(space: Mapping[str, ParamSpec], trial) -> str:
    """A child run's name says what the trial tried: "t085 lr=0.246 hidden=4"."""
    parts = [f"t{trial.number:03d}"]
    for name, spec in space.items():
        v = trial.params.get(spec.key or name)
        parts.append(f"{name}={v:.3g}" if isinstance(v, float) else f"{name}={v}")
    return " ".join(parts)


