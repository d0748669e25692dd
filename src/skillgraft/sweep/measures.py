"""Named measures: numbers a sweep can optimise that no suite file can express (`measure:` in
an objective or constraint), registered like suites: a package lists a mapping of names to
functions under the `skillgraft.measures` entry point (the lab registers its own,
`skillgraft.lab.measures`), so the sweep imports no measure's code itself.

A measure is `fn(model_dir, recipe, **options) -> float`: `model_dir` is a folder, or an
in-memory trial's evaluation backend (`load_model` gives the model and tokenizer of either);
`recipe` is the trial's recipe; `options` come from the objective's `options:`.
"""

from __future__ import annotations

from functools import lru_cache
from importlib.metadata import entry_points
from typing import Callable


@lru_cache(maxsize=1)
def registry() -> dict[str, Callable]:
    """{name: measure} from every package registering `skillgraft.measures` (loaded once)."""
    found: dict[str, Callable] = {}
    for entry in entry_points(group="skillgraft.measures"):
        found.update(entry.load())
    return found


def load_model(folder):
    """A measure's model and tokenizer: a folder loaded, or those of an in-memory trial (an
    evaluation backend on the warm target, `sweep.warm`)."""
    from skillgraft.evaluate.backends.hf import HFBackend

    if isinstance(folder, HFBackend):
        return folder.model, folder.tokenizer
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    return AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
