"""`lr_scales`: the learning rate per layer range and module kind, in the graft schedule's language.

`lr_scales: {layers: {0%-20%: 0, 20%-100%: 1}, modules: {attention: 0, embedding: 0}}` trains
each weight at `lr × factor`, the factor being the one a graft schedule would give the same
tensor (docs/vectors.md: layer ranges or shares of the depth, times the module kind's factor).
A factor of 0 freezes the weight (no gradient is computed for it, as LLaMA-Factory's `freeze`
fine-tuning does), so the knowledge graft search's finding — where in the depth the facts live
— can be used while training, not only when the delta is merged. Without `lr_scales` the
plain Trainer optimizer is built, bit for bit.
"""

from __future__ import annotations

from skillgraft.errors import UserError


def apply_lr_scales(model, spec, num_layers: int) -> dict[int, float]:
    """Freeze the parameters whose factor is 0; return {id(parameter): factor} for the rest
    (LoRA's adapter weights take the factor of the module they adapt: their names carry its
    layer and kind). Refuses a schedule that leaves nothing to train."""
    schedule = spec.build("lr_scales")
    if schedule is None:
        return {}
    schedule.num_layers = num_layers
    factors = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        factor = schedule.factor(name)
        if factor == 0:
            parameter.requires_grad_(False)
        else:
            factors[id(parameter)] = factor
    if not factors:
        raise UserError("lr_scales: every trainable weight has factor 0; nothing would be trained")
    return factors


def scaled_optimizer(trainer_class, args, model, factors: dict[int, float]):
    """`(optimizer class, kwargs)` for Trainer's `optimizer_cls_and_kwargs`: the optimizer the
    TrainingArguments choose, with each of Trainer's parameter groups (weight decay or not) split
    by factor and given `lr × factor`. The lr scheduler then scales each group's rate over time
    as it scales the plain one."""
    optimizer_class, kwargs = trainer_class.get_optimizer_cls_and_kwargs(args, model)

    class ScaledGroups(optimizer_class):
        def __init__(self, groups, **options):
            split = []
            for group in groups:
                by_factor: dict[float, list] = {}
                for parameter in group["params"]:
                    by_factor.setdefault(factors.get(id(parameter), 1.0), []).append(parameter)
                split += [{**group, "params": params, "lr": options["lr"] * factor}
                          for factor, params in sorted(by_factor.items())]
            super().__init__(split, **options)

    ScaledGroups.__name__ = f"Scaled{optimizer_class.__name__}"
    return ScaledGroups, kwargs
