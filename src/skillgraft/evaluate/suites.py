"""Suites: a YAML file naming probe sets (JSONL items) and the metrics scored on each.

Format (paths relative to the YAML file):

    name: retention
    generation: {max_new_tokens: 32}
    sets:
      - name: capitals_en
        items: retention_en.jsonl
        language: en                # optional default for the `language` metric
        generation: {chat: true}    # optional per-set overrides
        metrics: [keyword, language, {name: rouge2, tokenizer: cjk}]

Read by the project's one config loader (`skillgraft.config`): validated with pydantic,
errors name the file and the key (with "did you mean" for a misspelt key or metric), item
files relative to the YAML. Built-in suites live in `evaluate/suites/`; other packages add
theirs through the `skillgraft.suites` entry point (the lab registers its own).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from skillgraft.config import PATH, describe_error, load_config
from skillgraft.errors import UserError
from skillgraft.evaluate.backends.base import GenerationSettings, Prompt

BUILTIN_DIR = Path(__file__).parent / "suites"
MetricName = Literal["keyword", "rouge2", "exact_match", "choice_loglik", "choice_generated", "language",
                     "style", "repetition", "memorization", "judge", "kept", "general_kl"]


def suite_dirs() -> list[Path]:
    """Folders holding built-in suites: ours first, then those other packages register."""
    folders = [BUILTIN_DIR]
    for entry in entry_points(group="skillgraft.suites"):
        folders.append(Path(entry.load()()))
    return folders


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: str
    content: str


class Item(BaseModel):
    """One probe: a raw `prompt` or chat `messages`, plus what its metrics compare against."""

    model_config = ConfigDict(extra="forbid")
    id: str | None = None
    prompt: str | None = None
    messages: list[Message] | None = None
    reference: str | None = None
    keywords: str | list[str] | None = None
    choices: list[str] | None = Field(None, min_length=2)
    answer: int | str | None = None
    tags: list[str] = Field(default_factory=list)
    language: str | None = None
    _line: int = PrivateAttr(0)

    @model_validator(mode="after")
    def _check(self) -> "Item":
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of `prompt` or `messages`")
        if self.answer is not None:
            if self.choices is None:
                raise ValueError("`answer` needs `choices`")
            from skillgraft.evaluate.metrics.answers import answer_index

            answer_index(self.choices, self.answer)
        return self

    @property
    def input(self) -> Prompt:
        """The prompt as a backend takes it."""
        if self.prompt is not None:
            return self.prompt
        return [m.model_dump() for m in self.messages or []]


class MetricSpec(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: MetricName

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class SetConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    items: Annotated[str, PATH]
    metrics: list[MetricSpec] = Field(min_length=1)
    generation: dict[str, Any] = Field(default_factory=dict)
    language: str | None = None

    @field_validator("metrics", mode="before")
    @classmethod
    def _names(cls, value):
        """A metric is a name or a mapping with `name` and its options."""
        return [{"name": m} if isinstance(m, str) else m for m in value] if isinstance(value, list) else value


class SuiteConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    description: str = ""
    generation: GenerationSettings = Field(default_factory=GenerationSettings)
    sets: list[SetConfig] = Field(min_length=1)
    # score only the sets whose `language` the models speak (declared in their model card's
    # `language:`, or detected from the tokenizer; `eval --languages` overrides): the built-in
    # retention suite asks en/ja/ko and an English-only model's ja/ko scores mean nothing
    only_model_languages: bool = False


@dataclass
class ProbeSet:
    """A loaded set: its items, metrics (with options) and effective decoding settings."""

    name: str
    items: list[Item]
    metrics: list[MetricSpec]
    generation: GenerationSettings
    language: str | None = None
    source: str = "<memory>"


@dataclass
class Suite:
    name: str
    sets: list[ProbeSet]
    generation: GenerationSettings
    path: str | None = None
    sha256: str | None = None
    description: str = ""
    only_model_languages: bool = False




def load_items(path: str | Path) -> list[Item]:
    """Read a JSONL probe file; each error names the file and line."""
    path = Path(path)
    if not path.is_file():
        where = "" if path.is_absolute() else f" (looked for {path.resolve()}; relative paths in a suite are " \
            "relative to its folder)"
        raise UserError(f"probe file {path}: not found{where}")
    items: list[Item] = []
    seen: set[str] = set()
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}:{lineno}: malformed JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(raw, dict):
            raise UserError(f"{path}:{lineno}: each line must be a JSON object")
        try:
            item = Item.model_validate(raw)
        except ValidationError as exc:
            raise UserError(f"{path}:{lineno}: {describe_error(exc, Item)}") from None
        item._line = lineno
        item.id = str(item.id) if item.id is not None else f"{path.stem}-{lineno}"
        if item.id in seen:
            raise UserError(f"{path}:{lineno}: duplicate id {item.id!r}")
        seen.add(item.id)
        items.append(item)
    if not items:
        raise UserError(f"probe file {path}: no items")
    return items


def resolve_suite_path(suite: str | Path) -> Path:
    """A YAML path, or the name of a built-in suite (`retention`, `arithmetic`, the lab's suites)."""
    path = Path(suite)
    if path.is_file():
        return path
    folders = suite_dirs()
    for folder in folders:
        builtin = folder / f"{suite}.yaml"
        if builtin.is_file():
            return builtin
    names = ", ".join(sorted({p.stem for folder in folders for p in folder.glob("*.yaml")}))
    raise UserError(f"suite {suite}: no such file and no built-in suite of that name (built-in: {names})")


def load_suite(suite: str | Path) -> Suite:
    """Load and validate a suite YAML (or built-in name) with all its probe files."""
    path = resolve_suite_path(suite)
    text = path.read_text(encoding="utf-8")
    config = load_config(path, SuiteConfig, what="suite")
    # a suite that does not say `chat:` asks each model the way it is used: through its chat
    # template when it has one (`chat: auto`)
    suite_generation = GenerationSettings.model_validate({"chat": "auto",
                                                         **config.generation.model_dump(exclude_unset=True)})
    sets = []
    for index, set_config in enumerate(config.sets):
        try:
            generation = GenerationSettings.model_validate({**suite_generation.model_dump(), **set_config.generation})
        except ValidationError as exc:
            raise UserError(f"{path}: sets.{index}.generation.{describe_error(exc, GenerationSettings)}") from None
        probe_set = ProbeSet(set_config.name, load_items(set_config.items),
                             _resolve_options(set_config.metrics, path.parent), generation, set_config.language,
                             set_config.items)
        check_set(probe_set)
        sets.append(probe_set)
    if len({s.name for s in sets}) != len(sets):
        raise UserError(f"{path}: set names must be unique")
    return Suite(config.name, sets, suite_generation, str(path), hashlib.sha256(text.encode()).hexdigest(),
                 config.description, config.only_model_languages)


def _resolve_options(metrics: list[MetricSpec], base: Path) -> list[MetricSpec]:
    """Make file options (memorization `corpus`) absolute, relative to the YAML."""
    out = []
    for spec in metrics:
        options = spec.options
        if "corpus" in options and isinstance(options["corpus"], str):
            options["corpus"] = str(base / options["corpus"])
        out.append(MetricSpec(name=spec.name, **options))
    return out


def check_set(probe_set: ProbeSet) -> None:
    """Every item carries the fields its set's metrics need; metric options are known."""
    from skillgraft.evaluate.metrics import check_metric

    for spec in probe_set.metrics:
        check_metric(spec, probe_set)
