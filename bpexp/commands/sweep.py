"""`bpexp sweep`: run (or resume) an Optuna study over the train config, recorded in MLflow.

The command checks what needs this machine (device, memory, tracking store), opens the study
and its parent run (bpexp/study/storage.py), settles what dead workers left
(bpexp/study/workers.py), runs this worker's trials (bpexp/study/session.py), and at the end
re-checks the best trials on fresh seeds (bpexp/study/recheck.py), records the study
(bpexp/recording/study_record.py) and prints its summary (bpexp/study/summary.py).
"""
from __future__ import annotations

from typing import Sequence

import optuna
from optuna.trial import TrialState

from bpexp import names
from bpexp.config.environment import check_device, check_tracking_uri
from bpexp.config.schema import ConfigError, SweepAppConfig
from bpexp.recording import study_record, tracking
from bpexp.recording.recorder import Recorder, abandon
from bpexp.recording.study_note import study_note
from bpexp.runtime import stores
from bpexp.runtime.failpoints import failpoint
from bpexp.study import lr_units
from bpexp.study.recheck import recheck_study
from bpexp.study.search_space import blind_trials, check_search_space
from bpexp.study.batches import POPULATION, batch_plan
from bpexp.study.session import Recording, Session
from bpexp.study.storage import dashboard_note, open_study, parent_run
from bpexp.study.summary import print_summary, study_summary, with_recheck
from bpexp.study.workers import Heartbeat, take_over, trained
from bpexp.training.budget import memory_problem
from bpexp.training.data import dataset_from_config


def sweep(cfg: SweepAppConfig, args: Sequence[str] = ()) -> float:
    """Run (or resume) the study until it has sweep.n_trials trained trials; return the best value."""
    check_device(cfg.train.device)
    check_search_space(cfg)
    check_searched_devices(cfg)
    uri = check_tracking_uri(cfg.tracking.uri)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    data = dataset_from_config(cfg.data)
    check_memory(cfg)
    study, creator = open_study(cfg, data.sha256)
    if nothing_to_do(study, cfg):
        return print_done(cfg, study, uri)
    tags = tracking.run_tags("sweep", args)
    with Recorder(uri, cfg.tracking.experiment) as recorder:
        tested: dict = {}  # config -> the range test's lr, for an lr searched in its units (lr_units)
        if trained(study) < cfg.sweep.n_trials:  # while the recorder opens the store (~1 s here)
            lr_units.test_every_config(cfg, data, tested)
        parent = parent_run(recorder, study, creator, cfg, data, tags)
        failpoint("parent-created")
        take_over(study, recorder, parent)
        heartbeat = Heartbeat(study)
        progress = _progress(cfg, study)
        try:
            warm_ups = study_record.warm_ups(cfg.tracking.log_plots, cfg.tracking.log_model)
            Session(cfg, study, data, Recording(recorder, parent, tags, warm_ups), heartbeat, progress, tested).run()
            recorder.settle()  # every run ended, or the error that kept one from it
        except BaseException as e:
            status = "KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED"
            try:  # bounded: with the tracking server gone, the next sweep reopens it anyway
                recorder.call(tracking.end_run, parent, status, f"{type(e).__name__}: {e}").result(timeout=10)
            except Exception:
                pass
            raise
        finally:
            heartbeat.close()
            if progress is not None:
                progress.close()
        take_over(study, recorder, parent)  # runs of a worker that died while this one worked
        # The trials' summary, figures and best model are recorded while the best trials are
        # re-trained on fresh seeds (the recommendation), then the re-check's part.
        summary = study_summary(study, cfg)
        recorded = recorder.call(study_record.record_study, parent, summary, cfg.sweep.register_as,
                                 cfg.tracking.log_plots, cfg.tracking.log_model)
        recheck_study(cfg, study, data)
        summary = with_recheck(summary, study, cfg)
        recorder.call(study_record.record_recommendation, parent, summary, cfg.tracking.log_plots,
                      cfg.tracking.log_model).result()
        recorded.result()
        recorder.call(tracking.end_run, parent, "FINISHED").result()
        experiment_id = recorder.experiment_id.result()
        study.set_user_attr(names.EXPERIMENT_ID, experiment_id)
        dashboard_note(study, study_note(summary) + f"\n\nMLflow: the study's parent run {parent}, "
                       f"{stores.run_url(uri, experiment_id, parent)}")
        study.set_user_attr(names.RECORDED_TRIALS, trained(study))  # a rerun of the same command: nothing to do
    print_summary(cfg, study, summary, parent, uri, experiment_id)
    return summary.best_value


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


def _progress(cfg: SweepAppConfig, study: optuna.Study):
    if not cfg.sweep.progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=cfg.sweep.n_trials, initial=min(trained(study), cfg.sweep.n_trials),
                desc=f"study {study.study_name}", unit="trial")


