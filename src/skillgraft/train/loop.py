"""The one place a `transformers.Trainer` is built and run on token rows.

`skillgraft train` (`train.run`) and the lab's tiny-model jobs (`lab.train`) both train
through `train_rows`, so they share the collation (`data.encode.Collator`: right padding,
padding masked out of the loss) and the handling of Trainer's stdout, which would otherwise
mix its log dicts into the `--json` output.
"""

from __future__ import annotations

import contextlib
import sys


def train_rows(model, rows: list[dict], args, *, pad_id: int, callbacks=(), resume_from: str | None = None,
               quiet: bool = False):
    """Train `model` on `rows` (`input_ids`, `labels`, optionally packed `position_ids`) with the
    `TrainingArguments` `args`; returns (trainer, train result).

    `quiet` drops Trainer's per-step log dicts; whatever Trainer still prints goes to stderr.
    """
    from transformers import Trainer
    from transformers.trainer_callback import PrinterCallback

    from skillgraft.data.encode import Collator

    trainer = Trainer(model=model, args=args, train_dataset=rows, data_collator=Collator(pad_id),
                      callbacks=list(callbacks))
    if quiet:
        trainer.remove_callback(PrinterCallback)
    with contextlib.redirect_stdout(sys.stderr):
        result = trainer.train(resume_from_checkpoint=resume_from)
    return trainer, result
