"""Fair tuning: search spaces beside the methods (`space.py`) and `robustlearn tune` on Optuna (`study.py`)."""
