"""bpexp: learning-rate studies of back-propagation networks (Hydra + Optuna + MLflow)."""
