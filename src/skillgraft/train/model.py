"""Loading the model to train (full, LoRA, 4-bit QLoRA) and merging an adapter back.

The merge follows the one safe recipe: base weights in float32, adapter merged there, the
result cast back to the base model's own dtype, saved so plain `from_pretrained` loads it.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

from skillgraft.errors import UserError


def _torch_dtype(name: str):
    import torch

    return "auto" if name == "auto" else getattr(torch, name)


def model_dir(spec: str) -> Path:
    """The local folder of the model to train (a folder, Hugging Face id or `lab:NAME`)."""
    from skillgraft.checkpoint.kinds import local_model

    folder = local_model(spec, "model").path
    if not (folder / "config.json").is_file():
        raise UserError(f"model: {spec} has no config.json (not a Hugging Face checkpoint folder)")
    return folder


def compute_dtype(folder: Path, config) -> str:
    """`dtype: auto` is the checkpoint's own, except on a CPU where its bfloat16/float16 computes
    slower than float32 (`cpu.compute_dtype`): there training runs in float32, and a full
    fine-tune is saved back in the checkpoint's dtype (`outputs.save_outputs`)."""
    import torch

    from skillgraft import cpu
    from skillgraft.evaluate.backends.hf import chosen_dtype

    cpu.ensure_threads()
    if config.dtype != "auto" or config.method == "qlora" or torch.cuda.is_available():
        return config.dtype
    return chosen_dtype(folder, None, on_cpu=True) or "auto"


def base_dtype(spec: str):
    """The torch dtype the base checkpoint declares (float32 when it does not say)."""
    import torch

    from skillgraft import cpu

    name = cpu.stored_dtype(model_dir(spec))
    return getattr(torch, name) if isinstance(getattr(torch, name or "", None), torch.dtype) else torch.float32


def load_base(config, tokenizer):
    """The base model as the config asks: plain, or 4-bit for qlora (needs bitsandbytes + a GPU)."""
    import torch
    from transformers import AutoModelForCausalLM

    folder = model_dir(config.model)
    kwargs = {"dtype": _torch_dtype(compute_dtype(folder, config)), "local_files_only": True}
    if config.method == "qlora":
        if not torch.cuda.is_available() or importlib.util.find_spec("bitsandbytes") is None:
            missing = [what for what, ok in (("a CUDA GPU", torch.cuda.is_available()),
                                             ("the bitsandbytes package", importlib.util.find_spec("bitsandbytes")))
                       if not ok]
            raise UserError(f"method: qlora needs 4-bit loading, which needs {' and '.join(missing)}; "
                            "use method: lora (or full) on this machine")
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16)
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
    except (OSError, ValueError) as exc:
        raise UserError(f"model: cannot load {config.model}: {str(exc).splitlines()[0]}") from None
    model.config.use_cache = False  # training; also lets packed position_ids select block-diagonal masks
    if config.method == "qlora":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.gradient_checkpointing)
    elif config.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model


def add_lora(model, lora) -> tuple[object, list[str] | str, list[str]]:
    """Wrap `model` with a LoRA adapter per `lora` (a `train.config.LoraConfig`, a training
    config's `lora` section); returns (peft model, targets, notes)."""
    from peft import LoraConfig, get_peft_model

    from skillgraft.train.targets import resolve_targets

    targets, notes = resolve_targets(model, lora.targets, lora.tied_lm_head)
    peft_config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=targets,
                             modules_to_save=lora.modules_to_save or None, task_type="CAUSAL_LM", bias="none")
    try:
        with warnings.catch_warnings():
            # peft calls transformers' deprecated `is_gradient_checkpointing` (a FutureWarning per process)
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            peft_model = get_peft_model(model, peft_config)
    except ValueError as exc:
        raise UserError(f"lora: {str(exc).splitlines()[0]}") from None
    return peft_model, targets, notes


def merge_adapter(base_dir: str, adapter_dir: str | Path, out_dir: str | Path, untied: bool,
                  scale: float = 1.0, schedule=None) -> Path:
    """Merge a saved adapter into a fresh float32 copy of the base; save in the base's dtype.
    `scale` (`merge_scale`) multiplies every LoRA delta before the merge: 0 gives the base
    back, 1 the adapter as trained; `schedule` (`merge_schedule`, a graft `Schedule`) each
    module's delta by its layer's and kind's factor, as a graft of the delta would."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from skillgraft.train.targets import untie

    dtype = base_dtype(base_dir)
    base_dir = model_dir(base_dir)
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    if untied:
        untie(base)
    peft_model = PeftModel.from_pretrained(base, str(adapter_dir))
    if schedule is not None and schedule.num_layers is None:
        schedule.num_layers = base.config.num_hidden_layers
    if scale != 1.0 or schedule is not None:
        _scale_adapter(peft_model, scale, schedule)
    merged = peft_model.merge_and_unload()
    merged = merged.to(dtype)
    merged.config.use_cache = True
    merged.save_pretrained(out_dir)
    return Path(out_dir)


def _scale_adapter(peft_model, scale: float, schedule=None) -> None:
    """Multiply each LoRA layer's scaling (alpha / r) by `scale` (and the schedule's factor for
    the module's weight), so the merged delta is scale · s · B·A·alpha/r. Full copies of modules
    (`modules_to_save`) cannot be dialled that way."""
    from peft.tuners.lora import LoraLayer

    if peft_model.peft_config["default"].modules_to_save:
        raise UserError("merge_scale: the adapter also saves whole modules (lora.modules_to_save), which a "
                        "scale cannot dial back; train without modules_to_save or use merge_scale: 1")
    for module_name, module in peft_model.named_modules():
        if isinstance(module, LoraLayer):
            factor = scale * (schedule.factor(f"{module_name}.weight") if schedule is not None else 1.0)
            for name in module.scaling:
                module.scaling[name] *= factor
