"""Writing a finished run: adapter or model folder, optional merged model, run record.

Every folder is written to a temp sibling and published by rename, and carries
`skillgraft.json` (kind, version, inputs with hashes, every option, per-file sha256).
"""

from __future__ import annotations

from pathlib import Path

from skillgraft.train.config import TrainConfig, config_hash
from skillgraft.train.provenance import input_entry, publish, staging_dir, write_provenance


def _inputs(config: TrainConfig) -> dict:
    return {
        "model": input_entry(config.model),
        "train": input_entry(config.data.train),
        "validation": input_entry(config.data.validation),
        "mix_in": input_entry(config.data.mix_in.path) if config.data.mix_in else None,
        "general_text": input_entry(config.monitor.general_text),
        "config_sha256": config_hash(config),
    }


def gather_weights(config: TrainConfig, trainer) -> None:
    """Under DeepSpeed, every rank must take part in saving (ZeRO-3 weights are sharded):
    `Trainer.save_model` gathers them into the staging folder `save_outputs` then publishes."""
    final = Path(config.output_dir) / ("model" if config.method == "full" else "adapter")
    if trainer.is_world_process_zero():
        staging_dir(final)
    trainer.accelerator.wait_for_everyone()
    trainer.save_model(str(staging_dir(final, create=False)))


def save_outputs(config: TrainConfig, model, tokenizer, summary: dict, untied: bool, gathered: bool = False) -> None:
    """Save the trained weights (and merged model) under `config.output_dir`; fills summary paths.

    `gathered`: the weights are already in the staging folder (`gather_weights`)."""
    from skillgraft.train.model import merge_adapter

    out = Path(config.output_dir)
    inputs, options = _inputs(config), config.model_dump(mode="json")
    extra = {"skipped": summary["notes"], "targets": summary["targets"], "stopped": summary["stopped"],
             "steps": summary["steps"]}
    if config.method == "full":
        staged = staging_dir(out / "model", create=not gathered)
        if not gathered:
            model.save_pretrained(staged)
        tokenizer.save_pretrained(staged)
        write_provenance(staged, "model", inputs, options, extra)
        summary["model_dir"] = str(publish(staged, out / "model"))
        kind = "model"
    else:
        staged = staging_dir(out / "adapter", create=not gathered)
        if not gathered:
            # lm_head as a target makes peft also store the full embedding matrices unless told
            # not to; the vocabulary is never resized here, so the adapter stays small.
            model.save_pretrained(staged, save_embedding_layers=False)
        tokenizer.save_pretrained(staged)
        write_provenance(staged, "adapter", inputs, options, {**extra, "untied_lm_head": untied})
        summary["adapter_dir"] = str(publish(staged, out / "adapter"))
        kind = "adapter"
        if config.merge:
            staged = staging_dir(out / "merged")
            merge_adapter(config.model, summary["adapter_dir"], staged, untied)
            tokenizer.save_pretrained(staged)
            write_provenance(staged, "model", {**inputs, "adapter": input_entry(summary["adapter_dir"])}, options,
                             {**extra, "merged": "float32 merge, saved in the base model's dtype"})
            summary["merged_dir"] = str(publish(staged, out / "merged"))
    if config.method == "full" and config.merge:
        summary["merged_dir"] = summary["model_dir"]
    run_record = {k: summary[k] for k in ("losses", "monitor", "data", "train_runtime", "rolled_back_to")}
    # The run record lists its output folders (each hashes its own files), not the checkpoints.
    write_provenance(out, kind, inputs, options, {**extra, "outputs": {k: summary[k] for k in (
        "adapter_dir", "merged_dir", "model_dir")}, "run": run_record}, files={})
