"""Optional probe suite for the retention monitor, from the evaluation layer.

`monitor.suite: SUITE.yaml` runs `skillgraft.evaluate.run_suite` on the model in memory at
every probe, so retention can be measured on real tasks (facts, arithmetic, languages), not
only as perplexity. Imported lazily: the training layer works without the evaluation layer.
"""

from __future__ import annotations

import math

from skillgraft.errors import UserError

# Probe values where lower is better (failure rates, divergences, losses): reported, kept out
# of the score, and minimised when the monitor keeps the best step by one of them.
LOWER_IS_BETTER = ("repetition", "memorization", "general_kl", "validation_loss", "general_ppl")


def suite_probe(paths: str | list[str]):
    """A callable `(model, tokenizer) -> {"set.metric": value, ..., "score": mean}` over one
    suite or several (their set names must differ).

    `score` is the mean of the headline metrics where higher is better; retention is the
    score relative to the score before training. `kept` and `general_kl` compare with the
    model at the first probe (the model before training), whose answers are kept in memory."""
    try:
        from skillgraft.evaluate.runner import references, run_suite
        from skillgraft.evaluate.suites import load_suite
    except ImportError:
        raise UserError("monitor.suite needs the evaluation layer (skillgraft.evaluate), "
                        "which is not installed") from None
    suites = [load_suite(path) for path in ([paths] if isinstance(paths, str) else paths)]
    names = [s.name for suite in suites for s in suite.sets]
    if len(set(names)) != len(names):
        raise UserError(f"monitor.suite: two suites share a set name ({', '.join(sorted(names))})")
    refs: list = []

    def probe(model, tokenizer) -> dict:
        if not refs:  # the first probe: this model is the reference
            refs.extend(references((model, tokenizer), suite) for suite in suites)
        flat = {}
        for suite, reference in zip(suites, refs):
            results = run_suite({"model": (model, tokenizer)}, suite, reference=reference, log=None)
            for set_name, metrics in results["scores"].get("model", {}).items():
                for metric, value in metrics.items():
                    if "." not in metric and isinstance(value, (int, float)) and not math.isnan(value):
                        flat[f"{set_name}.{metric}"] = float(value)
        good = [v for k, v in flat.items() if k.split(".", 1)[1] not in LOWER_IS_BETTER + ("kept",)]
        flat["score"] = sum(good) / len(good) if good else float("nan")
        return flat

    return probe
