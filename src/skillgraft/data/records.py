"""Reading and writing training records: text lines, JSONL with text, QA pairs or chat.

One reader for every verb (`data prep`, `data show`, `train`), so a file that one accepts
the others accept too. A record is a dict with `text`, or `question` + `answer`, or
`messages` (a list of `{role, content}`); a `.txt` file gives one `text` record per line.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path

from skillgraft.errors import UserError

def read_records(path: str | Path, what: str = "data") -> list[dict]:
    """Load records from a `.txt` (one text per non-empty line) or `.jsonl`/`.json` file."""
    path = Path(path)
    if not path.is_file():
        where = "" if path.is_absolute() else f" (looked for {path.resolve()})"
        raise UserError(f"{what}: file not found: {path}{where}")
    raw = path.read_text(encoding="utf-8")
    if path.suffix == ".txt":
        return [{"text": line} for line in raw.splitlines() if line.strip()]
    if path.suffix == ".json":
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise UserError(f"{what}: {path} is not valid JSON: {exc}") from None
        if not isinstance(data, list):
            raise UserError(f"{what}: {path} must hold a JSON list of records")
        records = data
    else:
        records = []
        for number, line in enumerate(raw.splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise UserError(f"{what}: {path} line {number} is not valid JSON: {exc.msg}") from None
    for number, record in enumerate(records, 1):
        if isinstance(record, str):
            records[number - 1] = {"text": record}
        elif not isinstance(record, dict):
            raise UserError(f"{what}: {path} record {number} is neither an object nor a string")
    return records


def check_format(records: list[dict], fmt: str, path: str | Path) -> None:
    """Fail with one line when records do not carry the fields `fmt` needs."""
    from skillgraft.data.encode import record_format

    needs_of = {"text": ("text",), "qa": ("question", "answer"), "chat": ("messages",)}
    for number, record in enumerate(records, 1):
        needs = needs_of[record_format(record, fmt)]
        missing = [key for key in needs if key not in record]
        if missing:
            raise UserError(f"{path} record {number}: format {fmt!r} needs field(s) {', '.join(missing)}; "
                            f"it has {', '.join(sorted(record)) or 'none'} (set data.format to match the file)")
        if fmt == "chat":
            messages = record["messages"]
            if not isinstance(messages, list) or not all(isinstance(m, dict) and "role" in m and "content" in m
                                                          for m in messages):
                raise UserError(f"{path} record {number}: messages must be a list of {{role, content}} objects")


def map_text_fields(record: dict, fn: Callable[[str], str]) -> dict:
    """A copy of `record` with `fn` applied to every human-written text field."""
    out = dict(record)
    for key in ("text", "question", "answer"):
        if isinstance(out.get(key), str):
            out[key] = fn(out[key])
    if isinstance(out.get("messages"), list):
        out["messages"] = [dict(m, content=fn(m["content"])) if isinstance(m.get("content"), str) else m
                           for m in out["messages"]]
    return out


def record_text(record: dict) -> str:
    """All text of a record joined (for statistics and duplicate detection)."""
    parts = [record.get(key) for key in ("text", "question", "answer")]
    parts += [m.get("content") for m in record.get("messages") or [] if isinstance(m, dict)]
    return "\n".join(p for p in parts if isinstance(p, str))


def write_jsonl(path: str | Path, records: Iterable[dict]) -> Path:
    """Write records as JSONL, published whole by `checkpoint.atomic_file`."""
    from skillgraft.checkpoint.publish import atomic_file

    with atomic_file(path) as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return Path(path)
