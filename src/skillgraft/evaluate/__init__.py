"""Evaluation: generation backends, suites (YAML + JSONL), metrics, results.

Python API (what the CLI's `eval` calls; the training monitor and sweeps call it in-process):

    from skillgraft.evaluate import run_suite
    results = run_suite(["base/", "grafted/"], "retention", output="results.json")
    results = run_suite({"step-100": (model, tokenizer)}, "my_suite.yaml", batch_size=16)

Names are resolved lazily, so importing `skillgraft.evaluate.cli` (for `skillgraft --help`)
loads neither pydantic nor torch.
"""

from __future__ import annotations

from skillgraft.lazy import lazy_exports

_EXPORTS = {
    "run_suite": "skillgraft.evaluate.runner",
    "load_suite": "skillgraft.evaluate.suites",
    "load_items": "skillgraft.evaluate.suites",
    "Suite": "skillgraft.evaluate.suites",
    "ProbeSet": "skillgraft.evaluate.suites",
    "Item": "skillgraft.evaluate.suites",
    "Backend": "skillgraft.evaluate.backends",
    "GenerationSettings": "skillgraft.evaluate.backends",
    "make_backend": "skillgraft.evaluate.backends",
}
__all__ = sorted(_EXPORTS)


__getattr__ = lazy_exports("skillgraft.evaluate", _EXPORTS)
