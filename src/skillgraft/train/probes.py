"""Optional probe suite for the retention monitor, from the evaluation layer.

`monitor.suite: SUITE.yaml` runs `skillgraft.evaluate.run_suite` on the model in memory at
every probe, so retention can be measured on real tasks (facts, arithmetic, languages), not
only as perplexity. Imported lazily: the training layer works without the evaluation layer.
"""

from __future__ import annotations

import math

from skillgraft.errors import UserError

# Metrics where lower is better (rates of a failure): reported, but kept out of the score.
LOWER_IS_BETTER = ("repetition", "memorization")


def suite_probe(path: str):
    """A callable `(model, tokenizer) -> {"set.metric": value, ..., "score": mean}`.

    `score` is the mean of the headline metrics where higher is better; retention is the
    score relative to the score before training."""
    try:
        from skillgraft.evaluate.runner import run_suite
        from skillgraft.evaluate.suites import load_suite
    except ImportError:
        raise UserError("monitor.suite needs the evaluation layer (skillgraft.evaluate), "
                        "which is not installed") from None
    suite = load_suite(path)

    def probe(model, tokenizer) -> dict:
        results = run_suite({"model": (model, tokenizer)}, suite, log=None)
        flat = {}
        for set_name, metrics in results["scores"].get("model", {}).items():
            for metric, value in metrics.items():
                if "." not in metric and isinstance(value, (int, float)) and not math.isnan(value):
                    flat[f"{set_name}.{metric}"] = float(value)
        good = [v for k, v in flat.items() if k.split(".", 1)[1] not in LOWER_IS_BETTER]
        flat["score"] = sum(good) / len(good) if good else float("nan")
        return flat

    return probe
