"""The only place a trial meets training: the space, the trial, the study, the budget, the runners.

space.py   suggest a configuration, the grid, the active params, configs from params (the widths translation)
trial.py   the typed trial record, a trial as an engine member and back, replay, the report-and-prune callback
study.py   sampler, pruner, open_study / load_study, the study attr names
budget.py  the study-wide n_trials under any number of workers
runners.py StackRunner: a stack of one (sequential) or of K trials whose slots refill (training.population)
run.py     run_search / run_worker: what the CLI, the worker processes and the Python API call
"""

from automlp.search.run import Progress, SearchOutcome, run_search, run_worker

__all__ = ["Progress", "SearchOutcome", "run_search", "run_worker"]
