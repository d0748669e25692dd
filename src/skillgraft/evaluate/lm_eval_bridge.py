"""Optional: run lm-evaluation-harness tasks through its library API on an in-memory model.

Only for the transformers backend (the harness needs the model object); missing
`lm_eval` is a `UserError` that says which extra to install.
"""

from __future__ import annotations

from typing import Any

from skillgraft.errors import UserError


def require_lm_eval() -> None:
    """Fail before any model is loaded when the harness is missing."""
    import importlib.util

    if importlib.util.find_spec("lm_eval") is None:
        raise UserError("--lm-eval needs lm-evaluation-harness: pip install lm-eval")


def run_lm_eval(model, tokenizer, tasks: str, *, batch_size: int = 8, limit: int | None = None) -> dict[str, Any]:
    """`simple_evaluate` on `tasks` (comma-separated); returns the harness's `results` block."""
    try:
        from lm_eval import simple_evaluate
        from lm_eval.models.huggingface import HFLM
    except ImportError:
        raise UserError("--lm-eval needs lm-evaluation-harness: pip install lm-eval") from None
    names = [t.strip() for t in tasks.split(",") if t.strip()]
    if not names:
        raise UserError("--lm-eval: give task names, e.g. --lm-eval mmlu,gsm8k")
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    try:
        out = simple_evaluate(model=lm, tasks=names, limit=limit)
    except KeyError as exc:
        raise UserError(f"--lm-eval: unknown task {exc}") from None
    return out.get("results", {}) if out else {}
