"""Graft trials in memory, on a target loaded once per worker process.

A graft trial used to write its model folder, then load it again to evaluate it: on
SmolLM2-135M most of a trial was loading and writing, not grafting. Here a worker keeps the
target loaded (keyed by the content hash of its files, `evaluate.reference.model_fingerprint`,
which hashes each file once per process and then only checks sizes and times) and each
trial writes `target + Σ scale·vector` (any merge method, any schedule) into the loaded
parameters with the graft core's own arithmetic (`vectors.memory.graft_in_memory`, the same
bits `skillgraft graft` writes), restoring the tensors the previous trial changed. The
folder is written afterwards only for a trial worth keeping (best, on the front, `--keep`),
with the same plan, so `rebuild` and the kept output are what `skillgraft graft` makes.

A recipe that changes the chat template (`chat_template_from`) changes tokenizer files and
the generation config too; those trials still go through a folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

LOADS = {"count": 0}   # targets loaded by this process (tests count them)


@dataclass
class WarmTarget:
    """A target model loaded in this process, and which of its tensors the last trial changed."""

    key: str
    model: object
    tokenizer: object
    state: dict
    dirty: set[str] = field(default_factory=set)


_WARM: dict[str, WarmTarget] = {}


def warm_target(folder: Path) -> WarmTarget:
    """The target loaded once in this process (again only if its content changed); loaded the
    way evaluation loads a folder, so a trial scores as its written folder would."""
    from skillgraft.evaluate.backends.hf import load_pretrained
    from skillgraft.evaluate.reference import model_fingerprint

    folder = Path(folder).resolve()
    key = model_fingerprint(folder)
    warm = _WARM.get(key)
    if warm is None:
        _WARM.clear()   # one target per worker: a sweep grafts onto one model
        model, tokenizer = load_pretrained(str(folder))
        LOADS["count"] += 1
        warm = _WARM[key] = WarmTarget(key, model, tokenizer, model.state_dict())
    return warm


def graft_trial(recipe) -> tuple[object, Callable[[], str] | None]:
    """Carry out a graft recipe for evaluation: `(model, publish)`. In memory, `model` is an
    evaluation backend on the warm target and `publish()` writes the recipe's folder (returning
    it); through a folder (a chat template to change), `model` is the written folder and
    `publish` is None."""
    from skillgraft.evaluate.backends.hf import HFBackend
    from skillgraft.vectors import graft
    from skillgraft.vectors.driver import execute_graft, plan_graft
    from skillgraft.vectors.memory import graft_in_memory
    from skillgraft.vectors.recipe import graft_arguments

    arguments = graft_arguments(recipe)
    allow_nonfinite, shard_size = arguments.pop("allow_nonfinite"), arguments.pop("shard_size")
    allow_pickle = arguments.get("allow_pickle", False)
    plan = plan_graft(recipe.target, recipe.output, **arguments)
    if plan.template_plan is not None or allow_pickle:
        graft(recipe.target, recipe.output, quiet=True, **graft_arguments(recipe))
        return recipe.output, None
    warm = warm_target(plan.target.path)
    previous = warm.dirty
    warm.dirty = previous | set(plan.work)   # a trial failing halfway leaves these to restore next time
    warm.dirty = graft_in_memory(plan, warm.state, previous, allow_nonfinite)

    def publish() -> str:
        execute_graft(plan, quiet=True, allow_nonfinite=allow_nonfinite, shard_size=shard_size)
        return recipe.output

    return HFBackend(warm.model, warm.tokenizer, label="trial", source=str(recipe.output)), publish
