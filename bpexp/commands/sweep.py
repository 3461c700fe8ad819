"""`bpexp sweep`: run (or resume) an Optuna study over the train config, recorded in MLflow.

The command checks what needs this machine (device, memory, tracking store), opens the study
and its parent run (bpexp/study/storage.py), settles what dead workers left
(bpexp/study/workers.py), runs this worker's trials (bpexp/study/session.py) or starts
workers on an engine and follows them (bpexp/launchers), and at the end re-checks the best
trials on fresh seeds (bpexp/study/recheck.py), records the study
(bpexp/recording/study_record.py) and prints its summary (bpexp/study/summary.py).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import optuna
from optuna.trial import TrialState

from bpexp import names
from bpexp.config.environment import check_device, check_network_memory
from bpexp.config.schema import ConfigError, LauncherKind, SweepAppConfig, storage_default
from bpexp.launchers import launch
from bpexp.launchers.workers import LaunchError, Workers, check as check_launcher, follow_command, worker_count, worker_spec
from bpexp.recording import study_record, tracking
from bpexp.recording.recorder import Recorder, abandon
from bpexp.recording.study_note import study_note
from bpexp.runtime import stores, ui_links
from bpexp.runtime.failpoints import failpoint
from bpexp.runtime.failures import unreachable
from bpexp.study import lr_units
from bpexp.study.neighbours import train_neighbours
from bpexp.study.recheck import recheck_study
from bpexp.study.search_space import blind_trials, check_search_space
from bpexp.study.batches import POPULATION, batch_plan
from bpexp.study.session import Recording, Session
from bpexp.study.storage import dashboard_note, open_study, parent_run
from bpexp.study.summary import print_summary, study_summary, with_recheck
from bpexp.study.workers import POLL_S, Heartbeat, count, take_over, trained
from bpexp.training.budget import memory_problem
from bpexp.training.data import dataset_from_config


def sweep(cfg: SweepAppConfig, uri: str, args: Sequence[str] = ()) -> float:
    """Run (or resume) the study until it has sweep.n_trials trained trials, recorded in the
    tracking store at `uri` (checked and resolved: environment.check_tracking_uri); return the
    best value."""
    check_device(cfg.train.device)
    check_search_space(cfg)
    check_searched_devices(cfg)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    data = dataset_from_config(cfg.data)
    check_memory(cfg)
    launching = cfg.launcher.kind != LauncherKind.none
    storage = cfg.sweep.storage or storage_default()
    if launching:  # an engine that cannot start the workers: refused before the study is touched
        check_launcher(cfg.launcher, storage, uri)
        if worker_count(cfg.launcher) > 0:  # following a launch (workers=0) needs no engine here
            launch.prepare(cfg.launcher)
    study, creator = open_study(cfg, data.sha256)
    if nothing_to_do(study, cfg):
        return print_done(cfg, study, uri)
    tags = tracking.run_tags("sweep", args)
    with Recorder(uri, cfg.tracking.experiment) as recorder:
        tested: dict = {}  # config -> the range test's lr, for an lr searched in its units (lr_units)
        if trained(study) < cfg.sweep.n_trials and not launching:  # while the recorder opens the store (~1 s here)
            lr_units.test_every_config(cfg, data, tested)
        parent = parent_run(recorder, study, creator, cfg, data, tags)
        failpoint("parent-created")
        take_over(study, recorder, parent)
        served = stores.sqlite_file(storage) is None  # a database server to watch
        # A launching command trains no trial: its beat only reads the study, and so watches the
        # database server while the command follows its workers.
        heartbeat = Heartbeat(study, watch=served)
        progress = _progress(cfg, study)
        workers: Optional[Workers] = None
        neighbours: list = []  # trials the study's end tries next to its best ones, for the re-check
        try:
            if launching:
                workers = start_workers(cfg, args, study, uri)
                if workers is None:  # detached: another command follows the study and ends it
                    return float("nan")
                follow(cfg, study, workers, progress)
            else:
                warm_ups = study_record.warm_ups(cfg.tracking.log_plots, cfg.tracking.log_model)
                Session(cfg, study, data, Recording(recorder, parent, tags, warm_ups), heartbeat, progress, tested).run()
            if cfg.sweep.end:
                neighbours = train_neighbours(cfg, study, data, Recording(recorder, parent, tags), heartbeat, tested)
            recorder.settle()  # every run ended, or the error that kept one from it
        except BaseException as e:
            if launching:  # Ctrl-C, SIGTERM, or the engine lost: the workers this command started stop too
                launch.stop(cfg.launcher, workers)
            status = "KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED"
            try:  # bounded; and not tried on a server that stopped answering: the next sweep reopens it anyway
                if not unreachable(e):
                    recorder.call(tracking.end_run, parent, status, f"{type(e).__name__}: {e}").result(timeout=10)
            except Exception:
                pass
            raise
        finally:
            if heartbeat is not None:
                heartbeat.close()
            if progress is not None:
                progress.close()
        if launching:
            launch.stop(cfg.launcher, None)
        take_over(study, recorder, parent)  # runs of a worker that died while this one worked
        if not cfg.sweep.end:
            print(f"bpexp sweep: this worker is done; study '{study.study_name}' has {trained(study)} of "
                  f"{cfg.sweep.n_trials} trained trials; its end is left to the command that follows it")
            return float("nan")
        # The trials' summary, figures and best model are recorded while the best trials are
        # re-trained on fresh seeds (the recommendation), then the re-check's part.
        summary = study_summary(study, cfg)
        recorded = recorder.call(study_record.record_study, parent, summary, cfg.sweep.register_as,
                                 cfg.tracking.log_plots, cfg.tracking.log_model)
        recheck_study(cfg, study, data, neighbours)
        summary = with_recheck(summary, study, cfg)
        recorder.call(study_record.record_recommendation, parent, summary, cfg.tracking.log_plots,
                      cfg.tracking.log_model).result()
        recorded.result()
        recorder.call(tracking.end_run, parent, "FINISHED").result()
        experiment_id = recorder.experiment_id.result()
        study.set_user_attr(names.EXPERIMENT_ID, experiment_id)
        dashboard_note(study, study_note(summary) + f"\n\nMLflow: the study's parent run {parent}, "
                       f"{ui_links.run_url(uri, experiment_id, parent)}")
        study.set_user_attr(names.RECORDED_TRIALS, trained(study))  # a rerun of the same command: nothing to do
    print_summary(cfg, study, summary, parent, uri, experiment_id)
    return summary.best_value


def start_workers(cfg: SweepAppConfig, args: Sequence[str], study: optuna.Study, uri: str) -> Optional[Workers]:
    """Start launcher.workers workers on the engine; None when this command does not follow
    them (launcher.follow=false, or a Kubernetes Job left to the user to apply)."""
    n = worker_count(cfg.launcher)
    if n == 0:  # launcher.workers=0: follow a study launched before
        return _Following(study, cfg.sweep.n_trials)
    spec = worker_spec(cfg.launcher, list(args), study.study_name, cfg.sweep.storage or storage_default(), uri)
    started = launch.start(cfg.launcher, spec, n)
    how = f"follow it and end it with: {follow_command(list(args))}"
    if isinstance(started, Path):
        print(f"bpexp sweep: wrote the Job for study '{study.study_name}' ({n} workers) to {started}: "
              f"apply it with `kubectl apply -f {started}` (the Secret '{cfg.launcher.secret}' holds the "
              f"database password, key 'password'); {how}")
        return None
    print(f"bpexp sweep: study '{study.study_name}': started {started.where}", flush=True)
    if not cfg.launcher.follow:
        print(f"bpexp sweep: not following; {how}")
        return None
    return started


class _Following(Workers):
    """launcher.workers=0: no workers of this command's; the study is followed until it has its
    trials trained and none running (workers started before, by a launcher or by hand)."""
    n, where = 0, "the workers already at work"

    def __init__(self, study: optuna.Study, n_trials: int):
        self.study, self.n_trials = study, n_trials

    def running(self) -> bool:
        return trained(self.study) < self.n_trials or count(self.study, TrialState.RUNNING) > 0

    def failures(self) -> list[str]:
        return []

    def cancel(self) -> None:
        pass


def follow(cfg: SweepAppConfig, study: optuna.Study, workers: Workers, progress) -> None:
    """Wait for the workers, showing the study's trained trials; raise if they ended without
    training the study's n_trials (all of them failed, or the engine lost them)."""
    n = cfg.sweep.n_trials
    while workers.running():
        done = trained(study)
        if progress is not None:
            progress.n = min(done, n)
            progress.refresh()
        if done >= n and not count(study, TrialState.RUNNING):
            workers.drop_waiting()  # the running ones see the study done and end
        time.sleep(POLL_S)
    done, failed = trained(study), workers.failures()
    if progress is not None:
        progress.n = min(done, n)
        progress.refresh()
    if done < n:
        raise LaunchError(f"{len(failed)} of {workers.n} workers failed ({'; '.join(failed[:4]) or 'no exit status'}"
                          f"{'; ...' if len(failed) > 4 else ''}), and study '{study.study_name}' has {done} of {n} "
                          "trained trials: see their logs; run the same command again to resume")
    if failed:
        print(f"bpexp sweep: {len(failed)} of {workers.n} workers failed ({'; '.join(failed[:4])}); "
              f"the others trained the study's {n} trials", file=sys.stderr)


def nothing_to_do(study: optuna.Study, cfg: SweepAppConfig) -> bool:
    """The study has its n_trials trained trials, none running, and its end was recorded for them."""
    done = trained(study)
    return (done >= cfg.sweep.n_trials and study.user_attrs.get(names.RECORDED_TRIALS) == done
            and names.EXPERIMENT_ID in study.user_attrs
            and not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))


def print_done(cfg: SweepAppConfig, study: optuna.Study, uri: str) -> float:
    """A rerun of a finished study: say so, and print its summary as recorded (nothing trained,
    nothing written)."""
    abandon()  # no MLflow call to make: the recorder process need not finish starting
    summary = study_summary(study, cfg)
    print(f"study '{study.study_name}' has its {trained(study)} trained trials (sweep.n_trials="
          f"{cfg.sweep.n_trials}) and their record: nothing to do (a larger sweep.n_trials tops it up)")
    attrs = study.user_attrs
    print_summary(cfg, study, summary, attrs[names.PARENT_RUN_ID], uri, attrs[names.EXPERIMENT_ID])
    return summary.best_value


def check_searched_devices(cfg: SweepAppConfig) -> None:
    """A searched train.device must exist too: a trial never records a device it did not run on."""
    for name, spec in cfg.sweep.search_space.items():
        if (spec.key or name) == "train.device":
            for v in spec.choices or []:
                check_device(str(v), f"sweep.search_space.{name}")


def check_memory(cfg: SweepAppConfig) -> None:
    """Refuse, before training, a batch whose curves cannot fit in memory (train.epochs=1e9)."""
    blind = blind_trials(cfg.sweep.sampler)
    members = max(batch_plan(cfg.sweep, blind, n).trials for n in (0, cfg.sweep.sequential_trials)) * cfg.sweep.seeds
    problem = memory_problem(cfg.train.epochs, members, cfg.sweep.seeds)
    if problem:
        small = memory_problem(cfg.train.epochs, min(members, POPULATION), cfg.sweep.seeds) is None
        key, value = ("sweep.batch_size", cfg.sweep.batch_size) if small else ("train.epochs", cfg.train.epochs)
        raise ConfigError(key, value, problem)
    # The networks: the largest shape the study can try, as many as a batch trains at once.
    shapes = [("model.hidden", cfg.model.hidden)]
    for name, spec in cfg.sweep.search_space.items():
        if (spec.key or name) == "model.hidden":
            where = f"sweep.search_space.{name}"
            shapes = [(where, c) for c in spec.choices] if spec.choices else [(where, int(spec.high or 1))]
    for key, hidden in shapes:
        check_network_memory(hidden, cfg.data, members, key)


def _progress(cfg: SweepAppConfig, study: optuna.Study):
    if not cfg.sweep.progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=cfg.sweep.n_trials, initial=min(trained(study), cfg.sweep.n_trials),
                desc=f"study {study.study_name}", unit="trial")


