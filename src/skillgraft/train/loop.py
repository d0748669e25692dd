"""The one place a `transformers.Trainer` is built and run on token rows.

`skillgraft train` (`train.run`) and the lab's tiny-model jobs (`lab.train`) both train
through `train_rows`, so they share the collation (`data.encode.Collator`: right padding,
padding masked out of the loss) and the handling of Trainer's stdout, which would otherwise
mix its log dicts into the `--json` output.
"""

from __future__ import annotations

import contextlib
import sys


def _regularized_trainer():
    """A `Trainer` whose loss gets an extra term (`train.keep.KLRegularizer`) on the steps the
    term chooses. Built only when a regulariser is on: without one, training is the plain
    `Trainer`, bit for bit."""
    from transformers import Trainer

    class RegularizedTrainer(Trainer):
        regularizer = None

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            result = super().compute_loss(model, inputs, return_outputs=return_outputs,
                                          num_items_in_batch=num_items_in_batch)
            extra = self.regularizer(model, self.state.global_step)
            if extra is None:
                return result
            if self.model_accepts_loss_kwargs and num_items_in_batch is not None:
                # the model's loss is already divided over the accumulated batch; the term is a
                # per-micro-batch mean, so it is divided the way Trainer divides unscaled losses
                extra = extra / self.current_gradient_accumulation_steps
            if return_outputs:
                return result[0] + extra, result[1]
            return result + extra

    return RegularizedTrainer


def train_rows(model, rows: list[dict], args, *, pad_id: int, callbacks=(), resume_from: str | None = None,
               quiet: bool = False, regularizer=None, lr_factors: dict[int, float] | None = None):
    """Train `model` on `rows` (`input_ids`, `labels`, optionally packed `position_ids`) with the
    `TrainingArguments` `args`; returns (trainer, train result). `regularizer(model, step)`
    returns a term to add to the loss at that step, or None. `lr_factors` ({id(parameter):
    factor}, `train.lr_scales`) trains those parameters at `lr × factor`.

    `quiet` drops Trainer's per-step log dicts; whatever Trainer still prints goes to stderr.
    """
    from transformers import Trainer
    from transformers.trainer_callback import PrinterCallback

    from skillgraft.data.encode import Collator

    trainer_class = Trainer if regularizer is None else _regularized_trainer()
    optimizer = None
    if lr_factors:
        from skillgraft.train.lr_scales import scaled_optimizer

        optimizer = scaled_optimizer(trainer_class, args, model, lr_factors)
    trainer = trainer_class(model=model, args=args, train_dataset=rows, data_collator=Collator(pad_id),
                            callbacks=list(callbacks), optimizer_cls_and_kwargs=optimizer)
    if regularizer is not None:
        trainer.regularizer = regularizer
    if quiet:
        trainer.remove_callback(PrinterCallback)
    with contextlib.redirect_stdout(sys.stderr):
        result = trainer.train(resume_from_checkpoint=resume_from)
    return trainer, result
