"""Reading and writing training records: text lines, JSONL with text, QA pairs or chat.

One reader for every verb (`data prep`, `data show`, `train`), so a file that one accepts
the others accept too. A record is a dict with `text`, or `question` + `answer`, or
`messages` (a list of `{role, content}`); a `.txt` file gives one `text` record per line.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from skillgraft.errors import UserError

FORMATS = ("text", "qa", "chat")


def read_records(path: str | Path, what: str = "data") -> list[dict]:
    """Load records from a `.txt` (one text per non-empty line) or `.jsonl`/`.json` file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what}: file not found: {path}")
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


def detect_format(record: dict) -> str:
    """The format a record is in: `chat` (messages), `qa` (question/answer) or `text`."""
    if "messages" in record:
        return "chat"
    if "question" in record and "answer" in record:
        return "qa"
    if "text" in record:
        return "text"
    raise UserError(f"record has none of the fields text, question+answer, messages: {sorted(record)}")


def check_format(records: list[dict], fmt: str, path: str | Path) -> None:
    """Fail with one line when records do not carry the fields `fmt` needs."""
    needs = {"text": ("text",), "qa": ("question", "answer"), "chat": ("messages",)}[fmt]
    for number, record in enumerate(records, 1):
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
    """Write records as JSONL through a temp file in the same folder, published by rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
