"""LoRA target modules: presets from the seeds, name checks, and the tied-embedding trap.

Seed 002 adapted `q,v`; seed 003 found `lm_head, v, o, gate, up` matched full fine-tuning
for knowledge. On a model whose `lm_head` shares its weight with the input embeddings, a
LoRA on `lm_head` silently changes the embeddings too once merged, so that case must be
decided by the user (`lora.tied_lm_head: untie | skip`), never guessed.
"""

from __future__ import annotations

from skillgraft.errors import UserError

PRESETS: dict[str, list[str] | str] = {
    "attn-qv": ["q_proj", "v_proj"],
    "knowledge": ["lm_head", "v_proj", "o_proj", "gate_proj", "up_proj"],
    "all-linear": "all-linear",
}
ALIASES = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "o_proj",
           "gate": "gate_proj", "up": "up_proj", "down": "down_proj"}


def linear_names(model) -> list[str]:
    """Leaf names of the layers LoRA can adapt (Linear, and GPT-2's Conv1D), sorted."""
    import torch

    kinds = (torch.nn.Linear,)
    try:
        from transformers.pytorch_utils import Conv1D

        kinds += (Conv1D,)
    except ImportError:  # pragma: no cover - very old transformers
        pass
    return sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, kinds)})


def is_tied(model) -> bool:
    """True when the output projection shares its weight tensor with the input embeddings."""
    out, inp = model.get_output_embeddings(), model.get_input_embeddings()
    if out is None or inp is None:
        return False
    return out.weight.data_ptr() == inp.weight.data_ptr()


def untie(model) -> None:
    """Give `lm_head` its own copy of the embedding matrix and record it in the config."""
    import torch

    out = model.get_output_embeddings()
    out.weight = torch.nn.Parameter(out.weight.detach().clone(), requires_grad=out.weight.requires_grad)
    model.config.tie_word_embeddings = False
    text_config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else None
    if text_config is not None and text_config is not model.config:
        text_config.tie_word_embeddings = False


def resolve_targets(model, targets: str | list[str], tied_lm_head: str = "error") -> tuple[list[str] | str, list[str]]:
    """Expand presets and aliases, check names exist, decide the tied `lm_head` case.

    Returns (targets for peft, notes). Untying happens here, on `model`, when asked for.
    """
    valid = linear_names(model)
    notes: list[str] = []
    if isinstance(targets, str):
        names = PRESETS.get(targets)
        if names is None:
            names = [t.strip() for t in targets.split(",") if t.strip()]
    else:
        names = list(targets)
    if names == "all-linear":
        return "all-linear", notes
    expanded = []
    for name in names:
        if name in PRESETS and isinstance(PRESETS[name], list):
            expanded += PRESETS[name]
        else:
            expanded.append(ALIASES.get(name, name) if ALIASES.get(name) in valid else name)
    unknown = [n for n in expanded if n not in valid]
    if unknown:
        raise UserError(f"lora.targets: unknown module(s) {', '.join(unknown)} for {model.config.model_type}; "
                        f"valid: {', '.join(valid)} (or a preset: {', '.join(PRESETS)})")
    head = model.get_output_embeddings()
    head_name = next((n.rsplit('.', 1)[-1] for n, m in model.named_modules() if m is head), "lm_head")
    if head_name in expanded and is_tied(model):
        if tied_lm_head == "error":
            raise UserError(f"lora.targets: {head_name} is tied to the input embeddings in this model, so an adapter "
                            "on it would change the embeddings too; set lora.tied_lm_head=untie (own copy, saved "
                            "untied) or lora.tied_lm_head=skip (leave it out)")
        if tied_lm_head == "skip":
            expanded = [n for n in expanded if n != head_name]
            notes.append(f"{head_name} skipped: tied to the input embeddings")
        else:
            untie(model)
            notes.append(f"{head_name} untied from the input embeddings (saved with tie_word_embeddings=false)")
    if not expanded:
        raise UserError("lora.targets: nothing left to adapt")
    return sorted(dict.fromkeys(expanded)), notes
