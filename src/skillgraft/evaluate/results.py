"""Results: aggregation into set scores, retention ratios, resumable partial files, atomic writes.

A long run appends each finished item to `RESULTS.partial.jsonl` (first line: a key over
every setting that changes outputs). Re-running the same command skips the items already
there; a run with different settings starts over. The final JSON is written to a temporary
file and renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, Iterable

from skillgraft.evaluate.metrics import NOT_RATIOS
from skillgraft.evaluate.metrics.answers import retention


def settings_key(settings: dict[str, Any]) -> str:
    """Hash of the settings that determine outputs (batch size and timestamps excluded)."""
    stable = {k: v for k, v in settings.items() if k not in ("batch_size", "created", "models")}
    return hashlib.sha256(json.dumps(stable, sort_keys=True, default=str).encode()).hexdigest()


def mean(values: Iterable[Any]) -> float | None:
    """Mean of the numeric, non-NaN values (None when there are none)."""
    numbers = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)
               and not math.isnan(float(v))]
    return sum(numbers) / len(numbers) if numbers else None


def aggregate(items: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float | None]]]:
    """scores[model][set][metric] = mean over that set's items."""
    grouped: dict[str, dict[str, dict[str, list]]] = {}
    for row in items:
        per_set = grouped.setdefault(row["model"], {}).setdefault(row["set"], {})
        for metric, value in row["metrics"].items():
            per_set.setdefault(metric, []).append(value)
    return {model: {name: {metric: mean(values) for metric, values in metrics.items()}
                    for name, metrics in sets.items()} for model, sets in grouped.items()}


def retention_table(scores: dict, baseline: str) -> dict[str, dict[str, dict[str, float | None]]]:
    """score / baseline score for every other model: headline metrics where a share of the
    baseline's score means something (not `kept`, a divergence, or a failure rate)."""
    table: dict[str, dict[str, dict[str, float | None]]] = {}
    base = scores.get(baseline, {})
    for model, sets in scores.items():
        if model == baseline:
            continue
        for set_name, metrics in sets.items():
            for metric, value in metrics.items():
                before = base.get(set_name, {}).get(metric)
                if "." in metric or metric in NOT_RATIOS or value is None or before is None:
                    continue
                ratio = retention(value, before)
                table.setdefault(model, {}).setdefault(set_name, {})[metric] = None if math.isnan(ratio) else ratio
    return table


class PartialLog:
    """Append-only record of finished items, keyed by the run's settings."""

    def __init__(self, path: str | Path | None, key: str, log=None):
        self.path = Path(path) if path else None
        self.key = key
        self.done: dict[tuple[str, str, str], dict] = {}
        self.models: dict[str, dict] = {}
        if self.path is None:
            return
        if self.path.is_file():
            lines = self.path.read_text(encoding="utf-8").splitlines()
            header = _loads(lines[0]) if lines else None
            if header and header.get("key") == key:
                for line in lines[1:]:
                    row = _loads(line)
                    if row is None:  # a line cut by an interruption
                        continue
                    if "model_info" in row:
                        self.models[row["model_info"]] = row["describe"]
                    else:
                        self.done[(row["model"], row["set"], row["id"])] = row
                if log and self.done:
                    log(f"resuming from {self.path}: {len(self.done)} items already done")
                self._handle = self.path.open("a", encoding="utf-8")
                return
            if log:
                log(f"{self.path}: settings changed, starting over")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = self.path.open("w", encoding="utf-8")
        self._write({"key": key})

    def _write(self, row: dict) -> None:
        self._handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._handle.flush()

    def add(self, row: dict) -> None:
        self.done[(row["model"], row["set"], row["id"])] = row
        if self.path:
            self._write(row)

    def add_model(self, label: str, describe: dict) -> None:
        self.models[label] = describe
        if self.path:
            self._write({"model_info": label, "describe": describe})

    def finish(self) -> None:
        """Close and delete the partial file (the final results now hold everything)."""
        if self.path:
            self._handle.close()
            self.path.unlink(missing_ok=True)


def _loads(line: str):
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        return None


def write_json_atomic(path: str | Path, data: Any) -> Path:
    """Write JSON through `checkpoint.write_file_atomic` (a reader never sees half a file)."""
    from skillgraft.checkpoint.publish import write_file_atomic

    return write_file_atomic(path, json.dumps(data, ensure_ascii=False, indent=1))
