"""Every key bpexp writes into MLflow (run tags) and Optuna (study and trial user attributes),
named once. The values are what users see in the UIs and query (`tags."bpexp.outcome" = ...`),
so they never change; tests spell them out as literals, as a user would.
"""

# ------------------------------------------------------------------ both MLflow tags and Optuna attributes
WORKER = "bpexp.worker"  # host:pid@boot.pidns of the process that owns a run or a RUNNING trial (runtime/liveness.py)
OUTCOME = "bpexp.outcome"  # the verdict: results/outcome.py's Verdict
SUGGESTED_LR = "bpexp.suggested_lr"  # the range test's suggested lr for the trial's config (lr_units)
RECHECK = "bpexp.recheck"  # a re-checked trial's verdict on fresh seeds (tag); every re-check (study attr)
NEIGHBOUR_OF = "bpexp.neighbour_of"  # a trial the study's end tried next to a best config: that trial's number (study/neighbours.py)

# ------------------------------------------------------------------ MLflow run tags
COMMAND = "bpexp.command"  # the command line that made the run, passwords hidden
ERROR = "bpexp.error"  # why a run ended FAILED or KILLED
ROLE = "bpexp.role"  # "study" on a study's parent run
N_TRIALS = "bpexp.n_trials"  # on a study's parent: its sweep.n_trials now (the param keeps the first run's)
RESTORED = "bpexp.restored"  # a deleted parent run restored on resume
DATA_SHA256 = "bpexp.data_sha256"  # the content of a CSV the run trained on
STATUS = "bpexp.status"  # the verdict as older versions tagged it (read by compare)
COMPARED = "bpexp.compared"  # on a compare report run: what it compared
COMPARED_METRIC = "bpexp.compared_metric"  # ... and by which metric
LOWEST_LOSS_LR = "bpexp.lowest_loss_lr"  # lr-find: the lr at the lowest loss
TRIAL_STATE = "optuna.trial_state"  # a child run's trial state, as Optuna holds it
STUDY_NAME = "optuna.study_name"
TRIAL_NUMBER = "optuna.trial_number"
NOTE = "mlflow.note.content"  # a run's description (markdown), shown on its overview page

# ------------------------------------------------------------------ MLflow experiment tags
# What kind of work the experiment holds: MLflow 3's UI opens an experiment in its GenAI view
# unless told it is model training (the values: MLflow's UI, ExperimentKind in its JS bundle).
EXPERIMENT_KIND = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"

# ------------------------------------------------------------------ Optuna user attributes
CONFIG = "bpexp.config"  # study: the fingerprint of the config it was created with
TRACKING = "bpexp.tracking"  # study: its MLflow store and experiment
RECOMMENDED = "bpexp.recommended"  # study: the recommended trial's number
RECORDED_TRIALS = "bpexp.recorded_trials"  # study: how many trained trials its end (parent run) was recorded for
DIVERGED_SEEDS = "bpexp.diverged_seeds"  # trial: the seeds that diverged
STUCK_SEEDS = "bpexp.stuck_seeds"  # trial: the seeds stuck far above its median (results/outcome.py)
SHARPNESS = "bpexp.sharpness"  # trial: [sharpness at init, at the end] (median over seeds)
SURPLUS = "bpexp.surplus"  # trial: asked by a worker that raced another; never trained
PARENT_RUN_ID = "mlflow.parent_run_id"  # study: its MLflow parent run
EXPERIMENT_ID = "mlflow.experiment_id"  # study: the parent run's experiment
RUN_ID = "mlflow.run_id"  # trial: its child run
RUN_URL = "mlflow.run_url"  # trial: its child run's page on a tracking server
