"""Launchers: start a study's workers on an engine, each a plain `bpexp sweep` on the shared study.

`launcher=local` (processes on this machine), `slurm` (a job array), `ray` (one task per
worker on a Ray cluster), `kubernetes` (an Indexed Job). Each is a thin layer over the engine's
own CLI or client library; what a worker does (claim trials, beat, take over a dead worker's)
is bpexp/study/workers.py's, the same as for workers started by hand. The launching command
follows the study and ends it (bpexp/commands/sweep.py). Nothing here touches Optuna or MLflow.
"""
