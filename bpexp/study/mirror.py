"""A batch's trials sampled in an in-memory copy of the study, then asked for in the study.

Why: Optuna's samplers read the study's trials at every suggestion, and its RDB storage reads
every unfinished trial again each time (other workers may have changed them). A sweep asks a
batch of ~48 trials while the batch before (another ~48) is still RUNNING, so every ask re-read
up to ~100 trials from the database: at 1000 trials, asking took ~57 ms a trial, of which
~35 ms re-reading, and was over half of the sweep's own work per trial (py-spy). TPE reads
its history the same way from memory in a fraction of that.

How: the mirror holds a copy of the study's trials (Optuna's InMemoryStorage) under a copy
of the study's sampler, made before its first draw (the same random stream). Before a batch,
it takes in what changed in the study (one read); the batch is asked in the mirror exactly as
it would be in the study (all k asked first, then suggested in order: TPE's constant liar
sees the earlier ones' params), and each trial, as soon as the mirror has drawn its params,
is created in the study with them, RUNNING (Optuna's storage interface, `create_new_trial`
with a template: the sampler is not asked; suggesting a param a trial already has returns
it). With one worker the study gets the trials it would have got without the mirror, bit for
bit (tests/test_mirror.py). Another worker's trials
come in at the next batch; if trial numbers went apart (two workers asking at once), the
mirror is made again from the study.

Not for a batch over MAX_BATCH trials: its copies are all asked before the first is drawn.
TPE only: the grid sampler keeps its own state in the trials it asks (grid ids), and the GP
and CMA-ES samplers' own work dwarfs the reading.
"""
from __future__ import annotations

import copy
from typing import Optional

import optuna
from optuna.trial import FrozenTrial, TrialState


MAX_BATCH = 1000  # automatic batches are at most ~48 trials


class Mirror:
    def __init__(self, study: optuna.Study):
        self.study = study
        # A sampler of its own, as the study's was before any draw: TPE's search space (Optuna's
        # IntersectionSearchSpace) belongs to one study id, and the study's own sampler still
        # draws where the mirror does not (a batch asked while another worker's trial waits).
        self.sampler = copy.deepcopy(study.sampler)
        self.copy: Optional[optuna.Study] = None
        self.open: set[int] = set()  # numbers of the copy's unfinished trials, which may still change

    def sync(self) -> bool:
        """Bring the copy up to date with the study; False if the study has enqueued (WAITING)
        trials, which the copy's asking would take: then the batch is asked in the study."""
        real = self.study.get_trials(deepcopy=False)
        if any(t.state == TrialState.WAITING for t in real):
            self.copy = None
            return False
        if self.copy is None or not self._update(real):
            self._rebuild(real)
        return True

    def _rebuild(self, real: list[FrozenTrial]) -> None:
        self.copy = optuna.create_study(storage=optuna.storages.InMemoryStorage(), sampler=self.sampler,
                                        directions=self.study.directions)
        self.copy.add_trials(real)
        self.open = {t.number for t in real if not t.state.is_finished()}

    def _update(self, real: list[FrozenTrial]) -> bool:
        """Take in the study's changes since the last sync; False if the copy went apart."""
        storage, sid = self.copy._storage, self.copy._study_id
        mine = self.copy.get_trials(deepcopy=False)
        if len(mine) > len(real):
            return False
        for n in sorted(self.open):
            t, m = real[n], mine[n]
            if t.number != n or any(t.params.get(k, object()) != v for k, v in m.params.items()):
                return False  # the copy's trial n is not the study's: numbers went apart
            tid = storage.get_trial_id_from_study_id_trial_number(sid, n)
            for k in t.params.keys() - m.params.keys():  # e.g. train.lr, set after the batch was asked
                storage.set_trial_param(tid, k, t.distributions[k].to_internal_repr(t.params[k]), t.distributions[k])
            if t.state.is_finished():
                for step, v in t.intermediate_values.items():
                    if step not in m.intermediate_values:
                        storage.set_trial_intermediate_value(tid, step, v)
                for k, v in t.system_attrs.items():
                    if m.system_attrs.get(k) != v:
                        storage.set_trial_system_attr(tid, k, v)
                storage.set_trial_state_values(tid, t.state, t.values)
                self.open.discard(n)
        new = real[len(mine):]
        self.copy.add_trials(new)
        self.open.update(t.number for t in new if not t.state.is_finished())
        return True

    def ask(self, k: int, stop) -> list:
        """Ask k trials in the copy, all of them before any is suggested (as the study's are:
        TPE's constant liar then sees the batch's earlier trials with their params and the later
        ones without); fewer if stop() says so (an interrupt)."""
        trials = []
        for _ in range(k):
            if stop():
                break
            trials.append(self.copy.ask())
            self.open.add(trials[-1].number)
        return trials

    def draw(self, trial, suggest_all, user_attrs: dict) -> optuna.Trial:
        """Suggest one of those trials in the copy (`suggest_all(trial)`), and create it in the
        study: RUNNING, with those params and user attributes, in one write (not enqueued: with
        sqlite, two workers' asks can both take one enqueued trial)."""
        suggest_all(trial)
        frozen = self.copy._storage.get_trial(trial._trial_id)
        template = optuna.trial.create_trial(state=TrialState.RUNNING, params=dict(frozen.params),
                                             distributions=dict(frozen.distributions), user_attrs=user_attrs)
        return optuna.Trial(self.study, self.study._storage.create_new_trial(self.study._study_id, template_trial=template))
