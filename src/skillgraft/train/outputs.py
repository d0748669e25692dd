"""Writing a finished run: adapter or model folder, optional merged model, run record.

Every folder goes through the project's one writer (`checkpoint.AtomicFolder` +
`checkpoint.write_manifest`): written to a hidden sibling, published by rename, with a
`skillgraft.json` (kind, version, inputs with hashes, every option, per-file sha256) and a
model card.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from skillgraft.checkpoint import AtomicFolder, Card, file_record, write_manifest
from skillgraft.errors import UserError
from skillgraft.train.config import TrainConfig, config_hash


# What `skillgraft train` writes into output_dir (hidden entries: partial folders and their locks)
RUN_ENTRIES = ("adapter", "merged", "model", "checkpoints", "skillgraft.json", "README.md")


def claim_output_dir(out: Path, *, resume: bool, force: bool) -> None:
    """The output contract of every writing verb, for a training run: a folder holding other
    files is refused; an earlier run's folder needs `--force` (which removes what skillgraft
    train wrote there) or `--resume` (which continues it). Called before any model is loaded."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"output_dir {out} exists and is not a folder")
    entries = list(out.iterdir()) if out.is_dir() else []
    if not entries or resume:
        return
    foreign = sorted(p.name for p in entries if p.name not in RUN_ENTRIES and not p.name.startswith("."))
    if foreign:
        raise UserError(f"output_dir {out} holds files skillgraft train did not write ({', '.join(foreign[:3])}); "
                        "choose another output_dir")
    if not force:
        raise UserError(f"output_dir {out} holds an earlier training run; pass --force to replace it, or --resume "
                        "to continue it")
    for path in entries:
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def _inputs(config: TrainConfig) -> list[dict]:
    from skillgraft.checkpoint.resolve import resolve_model

    model = resolve_model(config.model, "model")
    return [entry for entry in (
        {**file_record("model", model.path), "spec": config.model, **model.record()},
        file_record("train", config.data.train), file_record("validation", config.data.validation),
        file_record("mix_in", config.data.mix_in.path if config.data.mix_in else None),
        file_record("general_text", config.monitor.general_text)) if entry is not None]


def gather_dir(config: TrainConfig) -> Path:
    """Where DeepSpeed ranks gather the sharded weights before rank 0 publishes them."""
    final = Path(config.output_dir) / ("model" if config.method == "full" else "adapter")
    return final.with_name(f".{final.name}.gather")


def gather_weights(config: TrainConfig, trainer) -> None:
    """Under DeepSpeed, every rank must take part in saving (ZeRO-3 weights are sharded):
    `Trainer.save_model` gathers them into `gather_dir`, which `save_outputs` then publishes."""
    staged = gather_dir(config)
    if trainer.is_world_process_zero():
        shutil.rmtree(staged, ignore_errors=True)
        staged.mkdir(parents=True)
    trainer.accelerator.wait_for_everyone()
    trainer.save_model(str(staged))


def _card(config: TrainConfig, summary: dict, what: str) -> Card:
    losses = summary["losses"]
    story = (f"{what} of `{config.model}` ({config.method}, lr {config.lr:g}, {summary['steps']} steps) on "
             f"`{Path(config.data.train).name}`" + (f"; loss {losses[0][1]:.4f} → {losses[-1][1]:.4f}" if losses else "")
             + (f". Stopped early by the retention monitor: {summary['stopped']}" if summary["stopped"] else "") + ".")
    scores = None
    if summary["monitor"]:
        last = summary["monitor"][-1]
        scores = {"retention monitor (last probe)": {k: v for k, v in last.items() if isinstance(v, (int, float))}}
    return Card(title=f"{Path(config.output_dir).name}: {what.lower()}", summary=story,
                tags=["lora" if config.method != "full" else "full-fine-tuning"],
                relation="adapter" if what == "LoRA adapter" else "finetune", scores=scores)


def save_outputs(config: TrainConfig, model, tokenizer, summary: dict, untied: bool, gathered: bool = False) -> None:
    """Save the trained weights (and merged model) under `config.output_dir`; fills summary paths.

    `gathered`: the weights are already in `gather_dir` (DeepSpeed)."""
    from skillgraft.train.model import merge_adapter, model_dir

    out = Path(config.output_dir)
    inputs, options = _inputs(config), config.model_dump(mode="json")
    extra = {"notes": summary["notes"], "targets": summary["targets"], "stopped": summary["stopped"],
             "steps": summary["steps"], "config_sha256": config_hash(config)}
    kind = "model" if config.method == "full" else "adapter"
    final = out / kind
    with AtomicFolder(final, force=True) as temp:  # output_dir was claimed (claim_output_dir)
        if gathered:
            for item in gather_dir(config).iterdir():
                os.replace(item, temp / item.name)
            gather_dir(config).rmdir()
        elif kind == "model":
            from skillgraft.train.model import base_dtype

            if config.dtype == "auto":  # trained in float32 on a CPU slow at the base's half dtype: saved in it
                model = model.to(base_dtype(config.model))
            model.save_pretrained(temp)
        else:
            # lm_head as a target makes peft also store the full embedding matrices unless told
            # not to; the vocabulary is never resized here, so the adapter stays small.
            model.save_pretrained(temp, save_embedding_layers=False)
        tokenizer.save_pretrained(temp)
        write_manifest(temp, kind=kind, inputs=inputs, options=options,
                       extra={**extra, **({"untied_lm_head": untied} if kind == "adapter" else {})},
                       card=_card(config, summary, "Fully fine-tuned model" if kind == "model" else "LoRA adapter"))
    summary[f"{kind}_dir"] = str(final)
    schedule = config.merge_schedule.build("merge_schedule") if config.merge_schedule else None
    if kind == "adapter" and config.merge:
        with AtomicFolder(out / "merged", force=True) as temp:
            merge_adapter(config.model, final, temp, untied, scale=config.merge_scale, schedule=schedule)
            tokenizer.save_pretrained(temp)
            write_manifest(temp, kind="model", inputs=[*inputs, file_record("adapter", final)], options=options,
                           extra={**extra, "merged": "float32 merge, saved in the base model's dtype"},
                           card=_card(config, summary, "Model merged with its LoRA adapter"))
        summary["merged_dir"] = str(out / "merged")
    if kind == "model" and config.merge and config.merge_scale == 1.0 and schedule is None:
        summary["merged_dir"] = summary["model_dir"]
    elif kind == "model" and config.merge:
        # the learned delta at merge_scale (and the schedule's scales), by the graft arithmetic:
        # base + α·s(tensor)·(trained − base)
        from skillgraft.vectors import graft

        base = model_dir(config.model)
        graft(base, out / "merged", sources=[(base, final, config.merge_scale)], with_embeddings=True, force=True,
              schedule=schedule)
        summary["merged_dir"] = str(out / "merged")
    written = {Path(summary[k]).name for k in ("adapter_dir", "merged_dir", "model_dir") if summary[k]}
    for stale in ("adapter", "merged", "model"):  # a resumed run's folder may hold an earlier run's parts
        if stale not in written and (out / stale).is_dir():
            shutil.rmtree(out / stale)
    run_record = {k: summary[k] for k in ("losses", "monitor", "data", "train_runtime", "rolled_back_to",
                                          "kept_step", "kl_last")}
    # The output folders are parts (each verified by its own manifest); checkpoints/ is the
    # Trainer's working state for --resume, not an output.
    write_manifest(out, kind="training-run", inputs=inputs, options=options, unverified=("checkpoints",), extra={
        **extra, "outputs": {k: summary[k] for k in ("adapter_dir", "merged_dir", "model_dir")}, "run": run_record})
