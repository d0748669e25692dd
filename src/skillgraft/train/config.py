"""The training config: a YAML file whose keys are the parameters of one training run.

Validated with pydantic so a typo (`lora.rank`, `method: qlor`) is one clear line, not a
failure twenty minutes into a run. `--set a.b=value` overrides any key with YAML-typed
values. The resolved config is what gets hashed into checkpoints and `skillgraft.json`, so
a resume can refuse a checkpoint written under other settings.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from skillgraft.errors import UserError

# Keys that do not change what is trained, so they are left out of the config hash.
UNHASHED = ("output_dir", "merge", "stop_at_step", "progress", "logging_steps", "save_total_limit")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MixIn(Strict):
    """Unrelated texts mixed into the training set (seed 003: the score falls as N grows)."""

    path: str
    n: int = Field(0, ge=0)
    seed: int = 0


class DataConfig(Strict):
    train: str
    validation: str | None = None
    format: Literal["text", "qa", "chat"] = "text"
    answer_only: bool = False
    packing: bool = False
    max_length: int = Field(512, ge=2)
    overlong: Literal["error", "drop", "truncate"] = "error"
    qa_template: str = "Q: {question}\nA:"
    mix_in: MixIn | None = None


class LoraConfig(Strict):
    r: int = Field(16, ge=1)
    alpha: float = Field(32, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    targets: str | list[str] = "attn-qv"
    modules_to_save: list[str] = []
    tied_lm_head: Literal["error", "untie", "skip"] = "error"


class MonitorConfig(Strict):
    """Retention probes and the degeneration guard, run from a Trainer callback."""

    enabled: bool = True
    every_steps: int = Field(10, ge=1)
    general_text: str | None = None
    max_texts: int = Field(64, ge=1)
    min_retention: float = Field(0.5, ge=0)
    action: Literal["stop", "rollback", "warn"] = "stop"
    suite: str | None = None
    prompts: list[str] = []
    max_new_tokens: int = Field(24, ge=1)
    min_distinct: float = Field(0.2, ge=0, le=1)
    loss_explode: float = Field(3.0, gt=1)


class TrainConfig(Strict):
    kind: Literal["train"] = "train"  # recipes say what they are (graft recipes say `kind: graft`)
    model: str
    method: Literal["lora", "qlora", "full"] = "lora"
    data: DataConfig
    lora: LoraConfig = LoraConfig()
    lr: float = Field(2e-4, gt=0)
    epochs: float | None = Field(None, gt=0)
    max_steps: int | None = Field(None, ge=1)
    batch_size: int = Field(8, ge=1)
    grad_accum: int = Field(1, ge=1)
    warmup_steps: int = Field(0, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    scheduler: Literal["linear", "constant", "cosine", "constant_with_warmup"] = "linear"
    max_grad_norm: float = Field(1.0, ge=0)
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    gradient_checkpointing: bool = False
    deepspeed: str | None = None  # a DeepSpeed JSON (e.g. recipes/accelerate/ds_zero3.json)
    seed: int = 0
    output_dir: str
    merge: bool = False
    save_steps: int | None = Field(None, ge=1)
    save_total_limit: int | None = Field(2, ge=1)
    logging_steps: int = Field(1, ge=1)
    stop_at_step: int | None = Field(None, ge=1)
    progress: bool = True
    monitor: MonitorConfig = MonitorConfig()

    @model_validator(mode="after")
    def _length(self):
        if self.epochs is None and self.max_steps is None:
            self.epochs = 1.0
        return self


def _set(tree: dict, dotted: str, raw: str) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        if node.get(key) is None:
            node[key] = {}
        if not isinstance(node[key], dict):
            raise UserError(f"--set {dotted}: {key} is not a section")
        node = node[key]
    node[keys[-1]] = yaml.safe_load(raw) if raw != "" else None


def load_config(path: str | Path | None, overrides: list[str] = (), base: dict | None = None) -> TrainConfig:
    """Read a YAML config, apply `key=value` overrides, validate; UserError on any problem.

    Relative paths in the config (model, data files) are resolved against the config's folder.
    """
    tree: dict = dict(base or {})
    root = Path(".")
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise UserError(f"config not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise UserError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None
        if not isinstance(loaded, dict):
            raise UserError(f"{path}: the config must be a YAML mapping of keys to values")
        tree.update(loaded)
        root = path.parent
    for item in overrides:
        if "=" not in item:
            raise UserError(f"--set {item!r}: expected key=value")
        key, raw = item.split("=", 1)
        try:
            _set(tree, key.strip(), raw)
        except yaml.YAMLError:
            raise UserError(f"--set {item!r}: value is not valid YAML") from None
    try:
        config = TrainConfig.model_validate(tree)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "config"
        raise UserError(f"{path or 'config'}: {where}: {first['msg']} "
                        f"({len(exc.errors())} problem(s) in all)") from None
    return _resolve_paths(config, root)


def _resolve_paths(config: TrainConfig, root: Path) -> TrainConfig:
    def fix(value: str | None) -> str | None:
        if value is None or Path(value).is_absolute():
            return value
        candidate = root / value
        return str(candidate) if candidate.exists() and not Path(value).exists() else value

    config.model = fix(config.model)
    config.data.train = fix(config.data.train)
    config.data.validation = fix(config.data.validation)
    if config.data.mix_in:
        config.data.mix_in.path = fix(config.data.mix_in.path)
    config.monitor.general_text = fix(config.monitor.general_text)
    config.monitor.suite = fix(config.monitor.suite)
    config.deepspeed = fix(config.deepspeed)
    return config


def config_hash(config: TrainConfig) -> str:
    """sha256 of the settings that decide what is trained (not where it goes or when it stops)."""
    data = config.model_dump(mode="json")
    for key in UNHASHED:
        data.pop(key, None)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
