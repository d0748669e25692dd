"""Render a results dict (from `run_suite`) into one HTML page with no external resources.

Images are PNG data URIs, styles are inline, text is escaped by jinja2's autoescape. A
small inline script counts images that decoded (data attributes, nothing shown), so a
headless-browser test can check them. Wide tables scroll inside their own box.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from skillgraft.report.plots import metric_bars

TEMPLATE = Path(__file__).with_name("report.html.jinja")


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def _prompt_text(prompt: Any) -> str:
    if isinstance(prompt, str):
        return prompt
    return "\n".join(f"[{m.get('role')}] {m.get('content')}" for m in prompt)


def short_labels(models: list[str]) -> list[str]:
    """Each model's shortest trailing path that no other model shares: `k1/merged` and
    `k5/merged` rather than `merged` twice, `base` rather than /long/path/base."""
    parts = [str(m).rstrip("/").split("/") for m in models]
    labels = []
    for mine in parts:
        for k in range(1, len(mine) + 1):
            tail = mine[-k:]
            if all(other[-k:] != tail for other in parts if other is not mine):
                break
        labels.append("/".join(tail))
    return labels


def decoding_applied(settings: dict[str, Any], models: list[str]) -> str:
    """How prompts were asked, per model: the chat template or raw (a suite's `chat: auto` is
    decided per model, recorded as `chat_applied`)."""
    generation = settings.get("generation", {})
    if generation.get("chat") != "auto":
        return "chat template" if generation.get("chat") else "raw prompts"
    ways = []
    for index, model in enumerate(models, start=1):
        applied = ((settings.get("models") or {}).get(model) or {}).get("chat_applied") or {}
        way = "chat template" if applied and all(applied.values()) else "raw prompts" if applied else "as the suite says"
        ways.append(f"M{index} {way}")
    return ", ".join(ways)


def render_report(results: dict[str, Any], title: str = "skillgraft comparison") -> str:
    """The HTML page as a string."""
    import jinja2

    settings = results["settings"]
    models = settings.get("model_order") or list(results["scores"])
    set_names = list(settings.get("sets") or {})
    scores = results["scores"]
    tables = []
    for set_name in set_names:
        metrics = sorted({m for model in models for m in scores.get(model, {}).get(set_name, {})})
        rows = [[metric] + [_fmt(scores.get(model, {}).get(set_name, {}).get(metric)) for model in models]
                for metric in metrics]
        per_set = {model: scores.get(model, {}).get(set_name, {}) for model in models}
        tables.append({"name": set_name, "rows": rows, "plot": metric_bars(set_name, per_set, models)})
    by_key: dict[tuple[str, str], dict[str, dict]] = {}
    order: list[tuple[str, str]] = []
    for row in results["items"]:
        key = (row["set"], row["id"])
        if key not in by_key:
            by_key[key] = {}
            order.append(key)
        by_key[key][row["model"]] = row
    prompts = []
    for set_name, item_id in order:
        rows = by_key[(set_name, item_id)]
        first = next(iter(rows.values()))
        prompts.append({
            "set": set_name, "id": item_id, "prompt": _prompt_text(first["prompt"]),
            "cells": [{"output": _output_text(rows[m]) if m in rows else "",
                       "metrics": ", ".join(f"{k} {_fmt(v)}" for k, v in rows[m]["metrics"].items() if "." not in k)
                       if m in rows else ""} for m in models],
        })
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    template = env.from_string(TEMPLATE.read_text(encoding="utf-8"))
    generation = {k: v for k, v in settings.get("generation", {}).items() if k != "chat"}
    return template.render(
        title=title, models=models, labels=short_labels(models), tables=tables, prompts=prompts,
        generation=json.dumps(generation, ensure_ascii=False), asked=decoding_applied(settings, models),
        tool_version=settings.get("tool_version", ""), suite=(settings.get("suite") or {}).get("name", ""),
        created=settings.get("created", ""),
    )


def write_report(results: dict[str, Any], path: str | Path, title: str = "skillgraft comparison") -> Path:
    """Write the page atomically (a temporary file beside `path`, renamed into place)."""
    from skillgraft.checkpoint.publish import write_file_atomic

    return write_file_atomic(path, render_report(results, title))


def _output_text(row: dict) -> str:
    """An item's answer; a set scored only on log-probabilities has none (not generated)."""
    return "(not generated: this set's metrics read no answer)" if row["output"] is None else row["output"]
