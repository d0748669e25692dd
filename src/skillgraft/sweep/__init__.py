"""Recipe search on Optuna (`skillgraft sweep run|report`): a graft recipe or training config,
a space over its dotted keys, objectives from the evaluation layer or the lab, Optuna's
storages, samplers and pruners. See docs/sweeps.md.
"""
