"""A sampler wrapper that never proposes a parameter set the study has already run.

Optuna's samplers may propose a point twice: a random start-up draw in a small discrete space
(82 points: nine draws repeat one about a third of the time), or, before `sweep.study.sampler_seed`
mixed the trial count in, a resumed study re-drawing its first run's start-up points exactly.
A repeated trial costs a whole training run and tells nothing new. The wrapper looks at the
last parameter a trial asks for (the space's order is fixed): when the values so far plus
the proposed one equal a trial that is complete, running or waiting, it draws that parameter
again from a seeded random sampler, up to `TRIES` times; a space with every such point taken
keeps the repeat. A relative proposal (NSGA-II's children, multivariate TPE) that repeats a
run trial is dropped, so the trial is drawn parameter by parameter and checked as above.
The grid sampler never repeats and is not wrapped.
"""

from __future__ import annotations

import numpy as np
from optuna.samplers import BaseSampler, RandomSampler
from optuna.trial import TrialState

TRIES = 32
TAKEN = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING, TrialState.PRUNED)


class FreshSampler(BaseSampler):
    def __init__(self, base: BaseSampler, names: list[str], seed: int):
        self.base, self.last, self.seed = base, names[-1], seed

    def reseed_rng(self) -> None:
        self.base.reseed_rng()

    def _taken(self, study, trial) -> list[dict]:
        return [t.params for t in study.get_trials(deepcopy=False, states=TAKEN) if t.number != trial.number]

    def infer_relative_search_space(self, study, trial):
        return self.base.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        params = self.base.sample_relative(study, trial, search_space)
        if self.last in params and params in self._taken(study, trial):
            return {}  # drawn parameter by parameter instead, and checked in sample_independent
        return params

    def sample_independent(self, study, trial, param_name, param_distribution):
        value = self.base.sample_independent(study, trial, param_name, param_distribution)
        if param_name != self.last:
            return value
        taken = self._taken(study, trial)
        for attempt in range(TRIES):
            if {**trial.params, param_name: value} not in taken:
                return value
            seed = int(np.random.SeedSequence([self.seed, trial.number, attempt]).generate_state(1)[0])
            value = RandomSampler(seed=seed).sample_independent(study, trial, param_name, param_distribution)
        return value

    def before_trial(self, study, trial) -> None:
        self.base.before_trial(study, trial)

    def after_trial(self, study, trial, state, values) -> None:
        self.base.after_trial(study, trial, state, values)
