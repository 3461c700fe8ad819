"""A batch's trials drawn in an in-memory mirror of the study (bpexp/study/mirror.py): the study gets
the trials it gets without the mirror, bit for bit, and a mirror that went apart from the
study (another worker's trials) is made again."""
from __future__ import annotations

import optuna
from optuna.trial import TrialState

from bpexp.study.mirror import Mirror
from bpexp.results.outcome import CONSTRAINT
from bpexp.study.search_space import make_sampler
from bpexp.study.batches import ask
from bpexp.study.lr_units import lr_distribution, relative, set_lr
from tests.conftest import compose_sweep


def value_of(params: dict) -> float:
    """A stand-in for training: smooth in the multiple and the width."""
    return (params["train.lr / lr_find"] - 0.8) ** 2 + 0.01 * abs(params["model.hidden"] - 4)


def tell(study, t) -> None:
    """As the sweep does: a 'diverged' trial (a multiple above 2.5) PRUNED with its
    constraint violated, the rest COMPLETE."""
    diverged = t.params["train.lr / lr_find"] > 2.5
    t.set_constraint(CONSTRAINT, 1.0 if diverged else 0.0)
    study.tell(t, None if diverged else value_of(t.params), state=TrialState.PRUNED if diverged else TrialState.COMPLETE)


def run_study(url: str, use_mirror: bool, other_worker=None) -> list:
    cfg = compose_sweep("sweep.n_trials=200", "sweep.seeds=1")
    key, spec = relative(cfg)
    study = optuna.create_study(storage=url, sampler=make_sampler(cfg.sweep), study_name="s")
    mirror = Mirror(study) if use_mirror else None
    pending: list = []
    for i, k in enumerate([8, 4, 4, 12, 12, 12]):  # sequential batches, then overlapped ones
        batch: list = []
        ask(study, cfg.sweep.search_space, cfg.sweep.n_trials, k, batch, mirror)
        for t in batch:  # the lr, set after the batch is asked, as bpexp/study/lr_units.py sets it
            set_lr(t, key, t.params["train.lr / lr_find"] * 0.3, lr_distribution(spec))
        if i < 3:  # told before the next batch is asked
            for t in batch:
                tell(study, t)
        else:  # told one batch late, as overlapped batches are
            for t in pending:
                tell(study, t)
            pending = batch
        if other_worker is not None and i == 3:
            other_worker(url)
    return [(t.number, t.state, t.params, t.values, t.system_attrs.get("constraints")) for t in study.trials]


def test_the_mirror_draws_the_trials_the_study_would(tmp_path):
    plain = run_study(f"sqlite:///{tmp_path}/plain.db", use_mirror=False)
    mirrored = run_study(f"sqlite:///{tmp_path}/mirror.db", use_mirror=True)
    assert len(plain) == 52 and mirrored == plain
    assert any(state == TrialState.PRUNED for _, state, *_ in plain)  # the constraint's path was taken


def test_a_mirror_takes_in_another_workers_trials_and_is_remade_when_numbers_part(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path}/two.db"

    def other_worker(_url=url):  # another worker asks and tells a trial of the same study
        s = optuna.load_study(study_name="s", storage=_url)
        t = s.ask({"train.lr / lr_find": optuna.distributions.FloatDistribution(0.1, 3, log=True),
                   "model.hidden": optuna.distributions.IntDistribution(1, 32, log=True)})
        s.tell(t, value_of(t.params))

    rebuilt, draws = [], []
    real_rebuild, real_ask = Mirror._rebuild, Mirror.ask
    monkeypatch.setattr(Mirror, "_rebuild", lambda self, real: rebuilt.append(len(real)) or real_rebuild(self, real))

    def ask_then_race(self, k, stop):  # at the 5th batch, the other worker asks meanwhile
        trials = real_ask(self, k, stop)
        draws.append(k)
        if len(draws) == 5:
            other_worker()
        return trials
    monkeypatch.setattr(Mirror, "ask", ask_then_race)
    trials = run_study(url, use_mirror=True, other_worker=lambda _: other_worker())
    # made at the start; the trial asked between two batches (number 28) taken in as it was;
    # the one asked while the mirror drew the 5th batch (number 41) parted the numbers there:
    # made again from the study at the 6th batch
    assert len(trials) == 54 and rebuilt == [0, 42]
    assert trials[28][2] != trials[41][2]
    for _, _, params, _, _ in trials:
        assert 0.1 <= params["train.lr / lr_find"] <= 3 and 1 <= params["model.hidden"] <= 32


def test_a_trial_drawn_in_the_mirror_is_not_drawn_again_in_the_study(tmp_path, monkeypatch):
    """The lr is suggested after the batch is asked: Optuna then asks the study's sampler for a
    relative draw of the trial, whose params the mirror drew already (search_space.DerivedParams
    answers that there is nothing to draw; TPE read every trial from the database to draw values
    nobody used). Every TPE draw is the mirror's, and the trials are those drawn without it."""
    drawn = []
    tpe_sample = optuna.samplers.TPESampler._sample

    def counted(self, study, trial, search_space):
        drawn.append(type(study._storage).__name__)
        return tpe_sample(self, study, trial, search_space)

    monkeypatch.setattr(optuna.samplers.TPESampler, "_sample", counted)
    mirrored = run_study(f"sqlite:///{tmp_path}/mirror.db", use_mirror=True)
    in_mirror = drawn.count("InMemoryStorage")
    assert in_mirror == len(drawn) == len(mirrored) - 8  # the first 8 are the random start-up's
    drawn.clear()
    assert run_study(f"sqlite:///{tmp_path}/plain.db", use_mirror=False) == mirrored
    assert len(drawn) == in_mirror and "InMemoryStorage" not in drawn  # drawn once each, in the study
