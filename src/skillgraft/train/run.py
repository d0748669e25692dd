"""One training run: config → data → model (+LoRA) → `transformers.Trainer` → published outputs.

The loop is the Trainer's own (checkpoints, resume, accelerate/DeepSpeed, progress bars);
this module only wires the config into it, adds our callbacks (loss recorder, retention
monitor, checkpoint stamps) and writes the outputs with their provenance:

    OUTPUT_DIR/checkpoints/checkpoint-N/   Trainer checkpoints (+ skillgraft-config.json)
    OUTPUT_DIR/adapter/                    peft adapter (lora, qlora)   kind "adapter"
    OUTPUT_DIR/model/                      full fine-tune               kind "model"
    OUTPUT_DIR/merged/                     with merge: true             kind "model"
    OUTPUT_DIR/skillgraft.json             the run: config, data report, losses, monitor
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

from transformers import TrainerCallback

from skillgraft.errors import UserError
from skillgraft.train.config import UNHASHED, TrainConfig, config_hash

STAMP = "skillgraft-config.json"


class Recorder(TrainerCallback):
    """Keeps the logged losses, stamps checkpoints with the config hash, honours stop_at_step."""

    def __init__(self, config: TrainConfig, monitor=None):
        self.config, self.losses, self.monitor = config, [], monitor
        self.step, self.max_steps = 0, 0
        self.stamp = {"config_sha256": config_hash(config), "config": config.model_dump(mode="json")}

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.losses.append([state.global_step, float(logs["loss"])])

    def status(self) -> str:
        """What the heartbeat prints: the step reached, or what happens before the first."""
        if not self.step:
            return "training: before step 1 (loading, replay answers, first step)"
        loss = f" · loss {self.losses[-1][1]:.4f}" if self.losses else ""
        return f"training: step {self.step}/{self.max_steps}{loss}"

    def on_step_end(self, args, state, control, **kwargs):
        self.step, self.max_steps = state.global_step, state.max_steps
        if self.config.stop_at_step and state.global_step >= self.config.stop_at_step:
            control.should_training_stop = True
            control.should_save = True

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if folder.is_dir():
                # the monitor's baseline goes along, so a resumed run compares against the
                # model before any training, not against the checkpoint it resumes from
                baseline = self.monitor.baseline if self.monitor is not None else None
                (folder / STAMP).write_text(json.dumps({**self.stamp, "monitor_baseline": baseline}, indent=2))


def _drop_empty(ckpt_dir: Path, created: Path | None) -> None:
    """A run stopped before its first checkpoint leaves no empty `checkpoints/` (which
    `--resume` would then reject) and, if it created `output_dir`, no empty folder either."""
    if ckpt_dir.is_dir() and not any(ckpt_dir.glob("checkpoint-*")):
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    if created is not None and created.is_dir() and not any(created.iterdir()):
        created.rmdir()


def _resume_checkpoint(ckpt_dir: Path, config: TrainConfig) -> str:
    from transformers.trainer_utils import get_last_checkpoint

    last = get_last_checkpoint(str(ckpt_dir)) if ckpt_dir.is_dir() else None
    if last is None:
        raise UserError(f"--resume: no checkpoint to resume from in {ckpt_dir} (a run stopped before its first "
                        f"save, every save_steps={config.save_steps or 500}, leaves none): train again without --resume")
    stamp_path = Path(last) / STAMP
    if not stamp_path.is_file():
        raise UserError(f"--resume: {last} has no {STAMP}; it was not written by skillgraft train")
    stamp = json.loads(stamp_path.read_text())
    if stamp.get("config_sha256") != config_hash(config):
        old, new = stamp.get("config", {}), config.model_dump(mode="json")
        keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k) and k not in UNHASHED)
        raise UserError(f"--resume: {last} was written by another config (differs in: {', '.join(keys) or '?'}); "
                        "resume with the same config, or train afresh without --resume")
    return last


def _restore_baseline(monitor, checkpoint: str) -> None:
    stamp = json.loads((Path(checkpoint) / STAMP).read_text())
    if stamp.get("monitor_baseline"):
        monitor.baseline = stamp["monitor_baseline"]
        monitor.records.append({**monitor.baseline, "resumed_from": checkpoint})


def autocast_bf16(config: TrainConfig) -> bool:
    """Whether training steps run under bfloat16 autocast. `mixed_precision: auto` turns it on
    only where it is faster: a CUDA GPU with bf16, or a CPU whose bf16 matrix products beat
    float32 (`cpu.half_is_fast`; on a 2-core Sapphire Rapids one SmolLM2-135M step of 8x64
    tokens took 2.6 s against 4.3 s in float32, elsewhere bf16 is several times slower).
    A bfloat16 model on CUDA always trained this way."""
    import torch

    from skillgraft import cpu

    if config.mixed_precision == "bf16":
        return True
    if config.mixed_precision == "auto":
        return torch.cuda.is_bf16_supported() if torch.cuda.is_available() else cpu.half_is_fast("bfloat16")
    return config.dtype == "bfloat16" and torch.cuda.is_available()


def _training_args(config: TrainConfig, ckpt_dir: Path):
    import torch
    from transformers import TrainingArguments

    from skillgraft.heartbeat import bar_visible

    length = {"max_steps": config.max_steps} if config.max_steps else {"num_train_epochs": config.epochs}
    bf16 = autocast_bf16(config)
    return TrainingArguments(
        output_dir=str(ckpt_dir), per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum, learning_rate=config.lr, weight_decay=config.weight_decay,
        warmup_steps=config.warmup_steps, lr_scheduler_type=config.scheduler, max_grad_norm=config.max_grad_norm,
        seed=config.seed, data_seed=config.seed, logging_steps=config.logging_steps, logging_nan_inf_filter=False,
        save_strategy="steps", save_steps=config.save_steps or 500, save_total_limit=config.save_total_limit,
        # the bar only where it is seen: in a log file its redraws are noise, the heartbeat is not
        report_to="none", disable_tqdm=not bar_visible(config.progress), remove_unused_columns=False, bf16=bf16,
        use_cpu=not torch.cuda.is_available(), deepspeed=config.deepspeed, **_sampling(config), **length)


def _sampling(config: TrainConfig) -> dict:
    """Trainer's option for batches of like lengths: `train_sampling_strategy` in transformers 5,
    `group_by_length` before (the same LengthGroupedSampler); nothing when not asked."""
    import dataclasses

    from transformers import TrainingArguments

    if not config.data.group_by_length:
        return {}
    if "train_sampling_strategy" in {f.name for f in dataclasses.fields(TrainingArguments)}:
        return {"train_sampling_strategy": "group_by_length"}
    return {"group_by_length": True}


def _monitor(config: TrainConfig, tokenizer, prepared, on_probe=None):
    from skillgraft.train.dataset import general_rows
    from skillgraft.train.monitor import TrainingMonitor

    cfg = config.monitor
    if not cfg.enabled:
        return None
    general = general_rows(cfg.general_text, tokenizer, cfg.max_texts, config.data.max_length)
    prompts = cfg.prompts
    if not prompts:  # the first words of a few held-out (or training) texts
        source = [tokenizer.decode(r["input_ids"], skip_special_tokens=True) for r in (general or
                                                                                        prepared.validation_rows)[:3]]
        prompts = [" ".join(text.split()[:3]) for text in source if text.split()]
    suite = None
    if cfg.suite:
        from skillgraft.train.probes import suite_probe

        suite = suite_probe(cfg.suite)
    return TrainingMonitor(cfg, tokenizer, lr=config.lr, general_rows=general,
                           validation_rows=prepared.validation_rows, prompts=prompts, suite=suite, on_probe=on_probe)


def _lr_scales(config: TrainConfig, model) -> dict[int, float]:
    """`lr_scales` applied to the model about to be trained: weights at factor 0 frozen, the
    others' factors by parameter ({} without `lr_scales`)."""
    if config.lr_scales is None:
        return {}
    from skillgraft.train.lr_scales import apply_lr_scales

    text_config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    return apply_lr_scales(model, config.lr_scales, text_config.num_hidden_layers)


def train(config: TrainConfig, *, resume: bool = False, force: bool = False, on_probe=None) -> dict:
    """Run training per `config`; return the summary `train --json` prints. An output_dir holding
    an earlier run needs `force` (replace it) or `resume`. `on_probe(record)` sees each of the
    monitor's probes during training (a sweep reports them to Optuna's pruner)."""
    from transformers import set_seed
    from transformers.utils import logging as hf_logging

    from skillgraft.heartbeat import Heartbeat, bar_visible
    from skillgraft.train.dataset import add_examples, check_data, load_tokenizer, prepare_data
    from skillgraft.train.keep import check_options, kl_regularizer, replay_examples
    from skillgraft.train.loop import train_rows
    from skillgraft.train.model import add_lora, load_base

    hf_logging.disable_progress_bar()  # loading bars; the Trainer's own progress bar stays
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    # a Trainer checkpoint of an adapter on lm_head keeps the embeddings (for resume): expected, not news
    warnings.filterwarnings("ignore", message="Setting `save_embedding_layers` to `True`", category=UserWarning)
    out = Path(config.output_dir)
    ckpt_dir = out / "checkpoints"
    checkpoint = _resume_checkpoint(ckpt_dir, config) if resume else None
    from skillgraft.train.outputs import claim_output_dir

    check_options(config)  # prompt files and counts, before the model is loaded
    check_data(config)
    fresh_folder = not out.exists()
    claim_output_dir(out, resume=resume, force=force)
    set_seed(config.seed)
    # a line every `heartbeat` s when no progress bar is seen (a log file, progress: false)
    recorder = Recorder(config)
    with Heartbeat(recorder.status, every=config.heartbeat, enabled=not bar_visible(config.progress)):
        tokenizer = load_tokenizer(config.model)
        prepared = prepare_data(config, tokenizer)
        model = load_base(config, tokenizer)
        if config.data.replay.n:  # the model's own answers, before any adapter is added
            prepared = add_examples(prepared, *replay_examples(config, model, tokenizer), config.data)
        regularizer = kl_regularizer(config, model, tokenizer, adapters=config.method != "full")
        targets, notes = None, []
        if config.method in ("lora", "qlora"):
            model, targets, notes = add_lora(model, config.lora)
        lr_factors = _lr_scales(config, model)
        monitor = _monitor(config, tokenizer, prepared, on_probe)
        if monitor is not None and checkpoint is not None:
            _restore_baseline(monitor, checkpoint)
        recorder.monitor = monitor
        args = _training_args(config, ckpt_dir)
        if checkpoint is None and ckpt_dir.is_dir() and args.process_index == 0:
            shutil.rmtree(ckpt_dir)  # a fresh run never mixes with an older run's checkpoints
        # without progress, no per-step log dicts either; the monitor prints its own lines
        try:
            trainer, result = train_rows(model, prepared.rows, args, pad_id=tokenizer.pad_token_id,
                                         callbacks=[recorder] + ([monitor] if monitor else []), resume_from=checkpoint,
                                         quiet=not config.progress, regularizer=regularizer,
                                         lr_factors=lr_factors)
        except BaseException:  # Ctrl-C, SIGTERM, a failure: leave a resumable checkpoint or nothing
            if args.process_index == 0:
                _drop_empty(ckpt_dir, out if fresh_folder else None)
            raise
    summary = {
        "output_dir": str(out), "adapter_dir": None, "merged_dir": None, "model_dir": None,
        "losses": recorder.losses, "monitor": monitor.records if monitor else [],
        "stopped": monitor.stop_reason if monitor else None,
        "rolled_back_to": monitor.rolled_back_to if monitor else None,
        "kept_step": monitor.kept_step if monitor else None,
        "kl_last": regularizer.last if regularizer else None,
        "steps": trainer.state.global_step, "world_size": trainer.args.world_size,
        "train_runtime": result.metrics.get("train_runtime"), "bf16_autocast": bool(args.bf16),
        "tokens": {"real": trainer.data_collator.real_tokens, "padded": trainer.data_collator.padded_tokens},
        "data": prepared.report, "targets": targets, "notes": notes,
        "trained_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }
    from skillgraft.train.outputs import gather_weights, save_outputs

    sharded = bool(trainer.is_deepspeed_enabled)  # ZeRO: every rank takes part in saving
    if sharded:
        gather_weights(config, trainer)
    if trainer.is_world_process_zero():
        save_outputs(config, trainer.model, tokenizer, summary, untied=any("untied" in n for n in notes),
                     gathered=sharded)
    trainer.accelerator.wait_for_everyone()
    return summary
