"""The training config: a YAML file whose keys are the parameters of one training run.

Validated with pydantic so a typo (`lora.rank`, `method: qlor`) is one clear line, not a
failure twenty minutes into a run; read by the project's one loader (`skillgraft.config`:
`--set a.b=value` overrides, paths relative to the YAML). The resolved config is what gets
hashed into checkpoints and `skillgraft.json`, so a resume can refuse a checkpoint written
under other settings.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from skillgraft.config import MODEL, NAMED, PATH, load_config
from skillgraft.vectors.recipe import ScheduleSpec

# Keys that do not change what is trained, so they are left out of the config hash.
UNHASHED = ("output_dir", "merge", "merge_scale", "merge_schedule", "stop_at_step", "progress", "heartbeat",
            "logging_steps", "save_total_limit")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MixIn(Strict):
    """Unrelated texts mixed into the training set (seed 003: the score falls as N grows)."""

    path: Annotated[str, PATH]
    n: int = Field(0, ge=0)
    seed: int = 0


class Replay(Strict):
    """Self-distillation replay: `n` general prompts answered by the model before training
    (greedy, generated once and cached), mixed into the training data, answer tokens learned.
    Only answers that end within `answer_tokens` are used: a wordy chat model may need more."""

    n: int = Field(0, ge=0)
    prompts: Annotated[str, NAMED] = "general"  # a JSONL/.txt of prompts, or the built-in `general`
    answer_tokens: int = Field(96, ge=1)
    seed: int = 0


class DataConfig(Strict):
    train: Annotated[str, PATH]
    validation: Annotated[str | None, PATH] = None
    format: Literal["text", "qa", "chat", "auto"] = "text"  # auto: each record by its fields
    answer_only: bool = False
    packing: bool = False
    group_by_length: bool = False  # batches of like lengths (transformers' LengthGroupedSampler): less padding
    max_length: int = Field(512, ge=2)
    overlong: Literal["error", "drop", "truncate"] = "error"
    qa_template: str = "Q: {question}\nA:"
    mix_in: MixIn | None = None
    replay: Replay = Replay()


class KL(Strict):
    """A KL(reference ‖ model) term on the reference's own answers to general prompts, added to
    the loss every `every` steps with `weight` (0: the plain run, bit for bit)."""

    weight: float = Field(0.0, ge=0)
    prompts: Annotated[str, NAMED] = "general"
    every: int = Field(1, ge=1)
    batch_size: int = Field(2, ge=1)  # prompts per KL term: 2 keeps a LoRA step within ~1.5x (docs/benchmarks.md)


class Regularize(Strict):
    kl: KL = KL()


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
    general_text: Annotated[str | None, PATH] = None
    max_texts: int = Field(64, ge=1)
    min_retention: float = Field(0.5, ge=0)
    action: Literal["stop", "rollback", "warn"] = "stop"
    suite: Annotated[str | list[str] | None, NAMED] = None  # suite YAML(s), or built-in suite names
    keep: Literal["last", "best"] = "last"  # best: the probe step with the best `keep_by` that meets `keep_floor`
    keep_by: str = "retention"               # a probe value: retention, SET.METRIC of the suite, ...
    keep_floor: dict[str, float] = {}        # probe values a kept step must reach, e.g. {probes.keyword: 0.5}
    prompts: list[str] = []
    max_new_tokens: int = Field(24, ge=1)
    min_distinct: float = Field(0.2, ge=0, le=1)
    loss_explode: float = Field(3.0, gt=1)


class TrainConfig(Strict):
    kind: Literal["train"] = "train"  # recipes say what they are (graft recipes say `kind: graft`)
    model: Annotated[str, MODEL]
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
    # the learning rate per layer range and module kind, as factors of `lr` (a graft schedule's
    # rules, docs/vectors.md); 0 freezes those weights (`train.lr_scales`)
    lr_scales: ScheduleSpec | None = None
    max_grad_norm: float = Field(1.0, ge=0)
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    # bfloat16 autocast over float32 weights (Trainer's `bf16`); auto: where bf16 computes fast
    # (a CUDA GPU with bf16, a CPU with AMX / AVX512-BF16, measured: `train.run.autocast_bf16`)
    mixed_precision: Literal["no", "bf16", "auto"] = "no"
    gradient_checkpointing: bool = False
    deepspeed: Annotated[str | None, PATH] = None  # a DeepSpeed JSON (e.g. recipes/accelerate/ds_zero3.json)
    seed: int = 0
    output_dir: Annotated[str, PATH]
    merge: bool = False
    merge_scale: float = Field(1.0, ge=0)  # the learned delta applied at this scale in merged/ (1: as trained)
    # and at these per-layer / per-module scales (a graft schedule, docs/vectors.md), times merge_scale
    merge_schedule: ScheduleSpec | None = None
    save_steps: int | None = Field(None, ge=1)
    save_total_limit: int | None = Field(2, ge=1)
    logging_steps: int = Field(1, ge=1)
    stop_at_step: int | None = Field(None, ge=1)
    progress: bool = True
    heartbeat: float = Field(30.0, ge=0)  # seconds between status lines when no progress bar is seen (0: none)
    monitor: MonitorConfig = MonitorConfig()
    regularize: Regularize = Regularize()

    @field_validator("mixed_precision", mode="before")
    @classmethod
    def _yaml_no(cls, value):
        """YAML reads a bare `no` (and `--set mixed_precision=no`) as false."""
        return {False: "no", True: "bf16"}.get(value, value) if isinstance(value, bool) else value

    @model_validator(mode="after")
    def _length(self):
        if self.epochs is None and self.max_steps is None:
            self.epochs = 1.0
        if self.merge_scale != 1.0 and not self.merge:
            raise ValueError("merge_scale needs merge: true (it scales the delta written to merged/)")
        if self.merge_schedule is not None and not self.merge:
            raise ValueError("merge_schedule needs merge: true (it scales the delta written to merged/)")
        if self.merge_schedule is not None:
            self.merge_schedule.build("merge_schedule")   # a bad rule is refused now, not after training
        if self.lr_scales is not None:
            self.lr_scales.build("lr_scales")   # a bad rule is refused now, not after loading the model
            if self.deepspeed:
                raise ValueError("lr_scales cannot be used with deepspeed: ZeRO builds its own optimizer groups")
        if self.regularize.kl.weight and self.deepspeed:
            raise ValueError("regularize.kl cannot be used with deepspeed: the reference log-probabilities "
                             "are computed on one process, and ZeRO shards the weights across processes")
        return self


def load_train_config(path: str | Path | None, overrides: list[str] = (), base: dict | None = None) -> TrainConfig:
    """Read a training config (or start from `base`), apply `--set` overrides, validate:
    the project's one loader (`skillgraft.config.load_config`), paths relative to the YAML."""
    return load_config(path, TrainConfig, overrides, base=base, what="training config")


def config_hash(config: TrainConfig) -> str:
    """sha256 of the settings that decide what is trained (not where it goes or when it stops)."""
    data = config.model_dump(mode="json")
    for key in UNHASHED:
        data.pop(key, None)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
