"""Retention monitor and degeneration guard: a Trainer callback that watches a run as it goes.

Seed 002 noticed forgetting only after training and wished for a way to watch general
knowledge during it; seed 003 saw too-high learning rates turn the model into "oooo…".
This callback probes the model every N steps: perplexity on a held-out general text
(retention = baseline perplexity / current, 1.0 = unchanged), validation loss when there is
a validation set, and greedy sample generations (distinct-token ratio). It stops a run — or
rolls back to the best state that still retained — when retention falls below a threshold,
and stops with a message naming the learning rate when the loss turns NaN/explodes or the
samples collapse into repetition.
"""

from __future__ import annotations

import math
import sys

from transformers import TrainerCallback

from skillgraft.data.encode import IGNORE, Collator


def mean_loss(model, rows: list[dict], pad_id: int, batch_size: int = 16) -> float:
    """Token-weighted mean cross-entropy of `model` on rows with `input_ids`/`labels`."""
    import torch

    collate = Collator(pad_id)
    total, count = 0.0, 0
    device = next(model.parameters()).device
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            batch = {k: v.to(device) for k, v in collate(rows[start:start + batch_size]).items()}
            labels = batch.pop("labels")
            logits = model(**batch).logits.float()
            shift_logits, shift_labels = logits[:, :-1], labels[:, 1:]
            mask = shift_labels != IGNORE
            losses = torch.nn.functional.cross_entropy(
                shift_logits.reshape(-1, shift_logits.size(-1)), shift_labels.reshape(-1).clamp(min=0),
                reduction="none").view_as(shift_labels)
            total += float(losses[mask].sum())
            count += int(mask.sum())
    return total / max(count, 1)


def distinct_ratio(token_ids: list[int]) -> float:
    """Unique tokens / tokens of one generation (1.0 = no repeats, ~0 = `o o o o`)."""
    return len(set(token_ids)) / len(token_ids) if token_ids else 1.0


class TrainingMonitor(TrainerCallback):
    """Probes every `cfg.every_steps` steps; records go to `self.records`, a stop reason to `self.stop_reason`."""

    def __init__(self, cfg, tokenizer, *, lr: float, general_rows: list[dict] | None = None,
                 validation_rows: list[dict] | None = None, prompts: list[str] = (), suite=None, on_probe=None):
        self.cfg, self.tokenizer, self.lr = cfg, tokenizer, lr
        self.general_rows = general_rows or []
        self.validation_rows = validation_rows or []
        self.prompts = list(prompts)
        self.suite = suite
        self.on_probe = on_probe  # called with each record after training started (a sweep's pruner)
        self.records: list[dict] = []
        self.stop_reason: str | None = None
        self.rolled_back_to: int | None = None
        self.baseline: dict | None = None
        self.first_loss: float | None = None
        self._best: tuple[float, int, dict] | None = None
        self._kept: tuple[float, int, dict] | None = None  # keep: best -- (value, step, weights)
        self.kept_step: int | None = None

    # -- probes -------------------------------------------------------------------------
    def _generate(self, model) -> tuple[float | None, list[str]]:
        import torch

        if not self.prompts:
            return None, []
        ratios, samples = [], []
        device = next(model.parameters()).device
        for prompt in self.prompts:
            inputs = self.tokenizer(prompt, return_tensors="pt").to(device)
            with torch.no_grad():
                out = model.generate(**inputs, max_new_tokens=self.cfg.max_new_tokens, do_sample=False,
                                     pad_token_id=self.tokenizer.pad_token_id, use_cache=True)
            new = out[0, inputs["input_ids"].shape[1]:].tolist()
            samples.append(self.tokenizer.decode(new, skip_special_tokens=True))
            if len(new) >= 4:
                ratios.append(distinct_ratio(new))
        return (sum(ratios) / len(ratios) if ratios else None), samples

    def probe(self, model, step: int) -> dict:
        """Run every probe once on `model` (left in the mode it was in)."""
        was_training = model.training
        model.eval()
        try:
            record: dict = {"step": step}
            pad = self.tokenizer.pad_token_id
            pad = self.tokenizer.eos_token_id if pad is None else pad
            if self.general_rows:
                loss = mean_loss(model, self.general_rows, pad)
                record["general_ppl"] = math.exp(min(loss, 50.0))
            if self.validation_rows:
                record["validation_loss"] = mean_loss(model, self.validation_rows, pad)
            distinct, samples = self._generate(model)
            if distinct is not None:
                record["distinct"] = distinct
                record["sample"] = samples[0][:80]
            if self.suite is not None:
                record["suite"] = self.suite(model, self.tokenizer)
        finally:
            model.train(was_training)
        if self.baseline is None:
            self.baseline = record
        if "general_ppl" in record:
            record["retention"] = self.baseline["general_ppl"] / record["general_ppl"]
        elif "suite" in record and self.baseline["suite"].get("score"):
            record["retention"] = record["suite"]["score"] / self.baseline["suite"]["score"]
        return record

    # -- decisions ----------------------------------------------------------------------
    def _stop(self, control, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
            print(f"monitor: stopping: {reason}", file=sys.stderr)
        control.should_training_stop = True

    def _lr_hint(self) -> str:
        return f"the learning rate is probably too high (lr={self.lr:g}); try about {self.lr / 10:g}"

    def _snapshot(self, model) -> dict:
        return {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if p.requires_grad}

    def _restore(self, model, snapshot: dict) -> None:
        import torch

        with torch.no_grad():
            for name, param in model.named_parameters():
                if name in snapshot:
                    param.copy_(snapshot[name].to(param.device))

    def _rollback(self, model) -> str:
        """With `action: rollback`, restore the best state that passed every check; the
        note to append to the stop message (empty when nothing was restored)."""
        if self.cfg.action != "rollback" or self._best is None or model is None:
            return ""
        self._restore(model, self._best[2])
        self.rolled_back_to = self._best[1]
        return f"; rolled back to step {self.rolled_back_to}"

    def _check(self, model, record: dict, control) -> None:
        cfg, base = self.cfg, self.baseline
        step = record["step"]
        distinct, base_distinct = record.get("distinct"), base.get("distinct")
        if distinct is not None and base_distinct is not None and distinct < cfg.min_distinct \
                and distinct < 0.5 * base_distinct:
            self._stop(control, f"sample generations collapsed into repetition at step {step} (distinct-token ratio "
                                f"{distinct:.2f} vs {base_distinct:.2f} at the start, "
                                f"e.g. {record.get('sample', '')!r}): "
                                + self._lr_hint() + self._rollback(model))
            return
        retention = record.get("retention")
        if retention is not None and retention < cfg.min_retention:
            measure = (f"general-text perplexity {record['general_ppl']:.1f} vs {base['general_ppl']:.1f}"
                       if "general_ppl" in record else
                       f"suite score {record['suite']['score']:.3f} vs {base['suite']['score']:.3f}")
            message = (f"retention fell to {retention:.2f} < {cfg.min_retention:g} at step {step} ({measure} at "
                       f"the start): the model is forgetting; lower the learning rate (lr={self.lr:g}), train fewer "
                       "steps, use a smaller rank, or mix in general text (data.mix_in)")
            if cfg.action == "warn":
                print(f"monitor: warning: {message}", file=sys.stderr)
                return
            self._stop(control, message + self._rollback(model))
            return
        # A state that passes every check: remember it when it is the best so far.
        if cfg.action == "rollback":
            score = record.get("validation_loss", -step)
            if self._best is None or score <= self._best[0]:
                self._best = (score, step, self._snapshot(model))

    # -- keep: best ---------------------------------------------------------------------
    @staticmethod
    def values(record: dict) -> dict[str, float]:
        """A probe's numbers by the names `keep_by`/`keep_floor` use: `retention`,
        `general_ppl`, `validation_loss`, `distinct`, and the suite's `SET.METRIC` and `score`."""
        flat = {k: v for k, v in record.items() if isinstance(v, (int, float)) and k != "step"}
        flat.update(record.get("suite") or {})
        return flat

    def _consider(self, model, record: dict) -> None:
        """With `keep: best`, remember this step's weights when it meets every floor and is the
        best so far by `keep_by` (minimised for losses, divergences and failure rates)."""
        from skillgraft.train.probes import LOWER_IS_BETTER

        cfg = self.cfg
        if cfg.keep != "best" or self.stop_reason:
            return
        values = self.values(record)  # the names were checked against the config (train.keep.check_options)
        if cfg.keep_by not in values or any(values.get(key, float("-inf")) < floor
                                            for key, floor in cfg.keep_floor.items()):
            return
        value = values[cfg.keep_by]
        if cfg.keep_by.rsplit(".", 1)[-1] in LOWER_IS_BETTER:
            value = -value
        if self._kept is None or value > self._kept[0]:
            self._kept = (value, record["step"], self._snapshot(model))

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if self.cfg.keep != "best" or model is None:
            return
        if not self.records or self.records[-1]["step"] != state.global_step:
            record = self.probe(model, state.global_step)  # the last state is a candidate too
            self.records.append(record)
            self._report(record, None)
            self._consider(model, record)
        if self._kept is None:
            print(f"monitor: keep: best: no probe met keep_floor {self.cfg.keep_floor}; keeping the last step",
                  file=sys.stderr)
            return
        self._restore(model, self._kept[2])
        self.kept_step = self._kept[1]
        print(f"monitor: keep: best: keeping step {self.kept_step} ({self.cfg.keep_by} "
              f"{abs(self._kept[0]):.4g})", file=sys.stderr)

    def _report(self, record: dict, loss: float | None) -> None:
        parts = [f"step {record['step']}"]
        if loss is not None:
            parts.append(f"loss {loss:.4f}")
        if "general_ppl" in record:
            parts.append(f"general ppl {record['general_ppl']:.2f} (retention {record['retention']:.2f})")
        if "validation_loss" in record:
            parts.append(f"val loss {record['validation_loss']:.4f}")
        if "suite" in record:
            parts.append(f"suite {record['suite'].get('score', float('nan')):.3f}")
        if "distinct" in record:
            parts.append(f"distinct {record['distinct']:.2f}")
        print("monitor: " + " | ".join(parts), file=sys.stderr)

    # -- Trainer hooks ------------------------------------------------------------------
    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if self.baseline is None:
            record = self.probe(model, state.global_step)
            self.records.append(record)
            self._report(record, None)
            self._consider(model, record)
            if self.cfg.action == "rollback":
                self._best = (record.get("validation_loss", -state.global_step), state.global_step,
                              self._snapshot(model))

    def on_log(self, args, state, control, logs=None, model=None, **kwargs):
        loss = (logs or {}).get("loss")
        if loss is None or self.stop_reason:
            return
        if not math.isfinite(loss):
            self._stop(control, f"loss became {loss} at step {state.global_step}: " + self._lr_hint()
                       + self._rollback(model))
        elif self.first_loss is None:
            self.first_loss = loss
        elif loss > self.cfg.loss_explode * self.first_loss:
            self._stop(control, f"loss exploded at step {state.global_step} ({loss:.3g} vs {self.first_loss:.3g} at "
                                "the start): " + self._lr_hint() + self._rollback(model))

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.cfg.every_steps or self.stop_reason:
            return
        record = self.probe(model, state.global_step)
        self.records.append(record)
        losses = [h["loss"] for h in state.log_history if "loss" in h]
        self._report(record, losses[-1] if losses else None)
        self._check(model, record, control)
        self._consider(model, record)
        if self.on_probe is not None:
            self.on_probe(record)
