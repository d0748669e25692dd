"""Training throughput: skillgraft `train` vs a plain Trainer + peft script; packing vs none.

    PYTHONPATH=src python benchmarks/train_bench.py [--steps 60] [--repeats 3] [--threads 1]

1. Overhead: the same tiny Llama, data, LoRA (q,v r=16), batch and steps, trained by
   `skillgraft.train.run.train` and by a minimal hand-written Trainer + peft script.
   Goal: our training tokens/s within 5% of the plain script's.
2. Packing: tweet-length texts (5-40 words) for the same number of epochs, with and
   without `data.packing`. Goal: >= 1.5x training tokens/s with packing.
3. KL regularisation (`regularize.kl`, LoRA): seconds per step with and without it, the
   same run otherwise (its reference answers are generated before training and cached, so
   they are not in `train_runtime`; the first run's generation time is printed). Goal: <= 1.5x.
   And the reference answers (replay and KL): a second run generates none (the cache is hit).

Tokens/s counts real (non-pad) training tokens over the Trainer's own `train_runtime`, so
model loading and data preparation are excluded for both sides. Runs alternate between
the two contenders and the median of `--repeats` is reported, in one process, on the same
inputs. One torch thread by default: tiny matmuls are dominated by thread contention on
shared machines, which would swamp the comparison.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]  # the tiny test model builder lives with the tests


def plain_trainer_runtime(model_dir: Path, texts: list[str], steps: int, batch: int, out: Path,
                          logging_steps: int = 500) -> float:
    """The reference: what a user would write by hand with Trainer + peft; seconds in train().
    `logging_steps=1` logs the loss every step, as `skillgraft train` does to record it."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    model.config.use_cache = False
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "v_proj"],
                                             task_type="CAUSAL_LM"))
    rows = [{"input_ids": tok(t)["input_ids"] + [tok.eos_token_id]} for t in texts]

    def collate(batch_rows):
        width = max(len(r["input_ids"]) for r in batch_rows)
        ids = torch.tensor([r["input_ids"] + [tok.pad_token_id] * (width - len(r["input_ids"])) for r in batch_rows])
        mask = (torch.arange(width)[None, :] < torch.tensor([len(r["input_ids"]) for r in batch_rows])[:, None]).long()
        labels = ids.masked_fill(mask == 0, -100)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    args = TrainingArguments(output_dir=str(out), per_device_train_batch_size=batch, max_steps=steps,
                             learning_rate=2e-4, report_to="none", disable_tqdm=True, save_strategy="no",
                             remove_unused_columns=False, use_cpu=True, seed=0, data_seed=0,
                             logging_steps=logging_steps)
    trainer = Trainer(model=model, args=args, train_dataset=rows, data_collator=collate)
    return trainer.train().metrics["train_runtime"]


def trained_tokens(lengths: list[int], steps: int, batch: int) -> float:
    """Non-pad tokens in `steps` batches of `batch` rows (whole epochs exact, the rest at the mean)."""
    per_epoch, epoch_steps = sum(lengths), -(-len(lengths) // batch)
    full, rest = divmod(steps, epoch_steps)
    return full * per_epoch + rest * batch * per_epoch / len(lengths)


def ours(config: dict) -> dict:
    from skillgraft.train.config import load_train_config
    from skillgraft.train.run import train

    return train(load_train_config(None, base=config))


def ours_runtime(model_dir: Path, data: Path, steps: int, batch: int, out: Path) -> float:
    summary = ours({"model": str(model_dir), "method": "lora", "lr": 2e-4, "max_steps": steps, "batch_size": batch,
                    "seed": 0, "output_dir": str(out), "progress": False, "save_steps": 10**6,
                    "data": {"train": str(data), "max_length": 256},
                    "lora": {"r": 16, "alpha": 32, "targets": "attn-qv"}, "monitor": {"enabled": False}})
    return summary["train_runtime"]


def packing_tokens_per_s(model_dir: Path, data: Path, packing: bool, epochs: int, batch: int, out: Path) -> float:
    summary = ours({"model": str(model_dir), "method": "lora", "lr": 2e-4, "epochs": epochs, "batch_size": batch,
                    "seed": 0, "output_dir": str(out), "progress": False, "save_steps": 10**6,
                    "data": {"train": str(data), "max_length": 256, "packing": packing},
                    "lora": {"r": 16, "alpha": 32, "targets": "attn-qv"}, "monitor": {"enabled": False}})
    return summary["data"]["tokens"] * epochs / summary["train_runtime"]


def kl_seconds_per_step(model_dir: Path, data: Path, prompts: Path, weight: float, steps: int, batch: int,
                        out: Path) -> float:
    summary = ours({"model": str(model_dir), "method": "lora", "lr": 2e-4, "max_steps": steps, "batch_size": batch,
                    "seed": 0, "output_dir": str(out), "progress": False, "save_steps": 10**6,
                    "data": {"train": str(data), "max_length": 256, "qa_template": "{question}"},
                    "regularize": {"kl": {"weight": weight, "prompts": str(prompts)}},
                    "lora": {"r": 16, "alpha": 32, "targets": "attn-qv"}, "monitor": {"enabled": False}})
    return summary["train_runtime"] / steps


def reference_generations(model_dir: Path, data: Path, prompts: Path, out: Path) -> tuple[int, float]:
    """(reference-answer generations, seconds) of one short KL run: the answers replay and KL
    train on come from one cache (`evaluate.reference`), so a second run should generate none.
    (The tiny random model never ends an answer, which replay needs; KL uses them as they are.)"""
    from skillgraft.evaluate import reference

    calls, compute = [], reference.compute
    reference.compute = lambda *a, **k: calls.append(1) or compute(*a, **k)
    try:
        start = time.time()
        ours({"model": str(model_dir), "method": "lora", "lr": 2e-4, "max_steps": 2, "batch_size": 8, "seed": 0,
              "output_dir": str(out), "progress": False, "save_steps": 10**6,
              "data": {"train": str(data), "max_length": 256, "qa_template": "{question}"},
              "regularize": {"kl": {"weight": 1.0, "prompts": str(prompts)}},
              "lora": {"r": 16, "alpha": 32, "targets": "attn-qv"}, "monitor": {"enabled": False}})
        return len(calls), time.time() - start
    finally:
        reference.compute = compute


def tweets(n: int, seed: int = 0) -> list[str]:
    from persona_world import persona_texts

    rng = random.Random(seed)
    pool = persona_texts(4 * n, seed)
    return [" ".join(rng.sample(pool, rng.randint(1, 6))) for _ in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--kl-only", action="store_true", help="Only part 3 (KL cost, replay cache).")
    args = parser.parse_args()

    import torch
    from transformers.utils import logging as hf_logging

    from tiny_models import build_tiny_model
    from persona_world import vocabulary, write_lines

    torch.set_num_threads(args.threads)
    hf_logging.set_verbosity_error()
    root = Path(tempfile.mkdtemp(prefix="train_bench_"))
    model_dir = build_tiny_model(root / "model", "llama", seed=0, words=vocabulary(), hidden=args.hidden,
                                 layers=2, intermediate=2 * args.hidden)
    texts = tweets(256)
    data = write_lines(root / "tweets.txt", texts)
    batch = 8
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    lengths = [len(tok(t)["input_ids"]) + 1 for t in texts]  # + EOS: the same rows on both sides
    tokens = trained_tokens(lengths, args.steps, batch)

    # warm-up (lazy imports, allocator, first-call kernels), not measured
    if not args.kl_only:
        plain_trainer_runtime(model_dir, texts, 5, batch, root / "warm_p")
    ours_runtime(model_dir, data, 5, batch, root / "warm_o")
    import os

    os.environ["SKILLGRAFT_CACHE"] = str(root / "cache")  # the first replay/KL run generates, later ones read
    prompts = write_lines(root / "prompts.txt", [" ".join(t.split()[:3]) for t in tweets(64, seed=7)])
    first_gen = reference_generations(model_dir, data, prompts, root / "replay1")
    second_gen = reference_generations(model_dir, data, prompts, root / "replay2")
    results = {"plain": [], "plain_log1": [], "ours": [], "nopack": [], "pack": [], "kl0": [], "kl1": []}
    for rep in range(args.repeats):
        for weight in (0.0, 1.0):
            results[f"kl{weight:g}"].append(kl_seconds_per_step(model_dir, data, prompts, weight, args.steps, batch,
                                                                root / f"kl{weight:g}-{rep}"))
        if args.kl_only:
            continue
        results["plain"].append(tokens / plain_trainer_runtime(model_dir, texts, args.steps, batch, root / f"p{rep}"))
        results["plain_log1"].append(tokens / plain_trainer_runtime(model_dir, texts, args.steps, batch,
                                                                    root / f"l{rep}", logging_steps=1))
        results["ours"].append(tokens / ours_runtime(model_dir, data, args.steps, batch, root / f"o{rep}"))
        results["nopack"].append(packing_tokens_per_s(model_dir, data, False, 2, batch, root / f"n{rep}"))
        results["pack"].append(packing_tokens_per_s(model_dir, data, True, 2, batch, root / f"k{rep}"))
    med = {k: statistics.median(v) if v else float("nan") for k, v in results.items()}
    lengths = [len(t.split()) for t in texts]
    print(f"\ntiny llama hidden={args.hidden}, {args.threads} thread(s), batch {batch}, {args.repeats} repeats "
          f"(median); tweets: {len(texts)} texts of {min(lengths)}-{max(lengths)} words")
    print(f"{'comparison':44}{'tokens/s':>12}{'ratio':>8}  goal")
    print(f"{'plain Trainer + peft script':44}{med['plain']:>12.0f}{1.0:>8.2f}")
    print(f"{'plain script, loss logged every step':44}{med['plain_log1']:>12.0f}"
          f"{med['plain_log1'] / med['plain']:>8.2f}")
    print(f"{'skillgraft train (same settings)':44}{med['ours']:>12.0f}{med['ours'] / med['plain']:>8.2f}  >= 0.95")
    print(f"{'  ... vs the plain script logging every step':44}{'':>12}{med['ours'] / med['plain_log1']:>8.2f}")
    print(f"{'skillgraft train, no packing (2 epochs)':44}{med['nopack']:>12.0f}{1.0:>8.2f}")
    print(f"{'skillgraft train, packing (2 epochs)':44}{med['pack']:>12.0f}{med['pack'] / med['nopack']:>8.2f}  >= 1.5")
    print(f"{'LoRA step, no KL (s/step)':44}{med['kl0']:>12.4f}{1.0:>8.2f}")
    print(f"{'LoRA step, regularize.kl weight 1 (s/step)':44}{med['kl1']:>12.4f}{med['kl1'] / med['kl0']:>8.2f}  <= 1.5")
    print(f"reference answers: first run {first_gen[0]} generation(s) ({first_gen[1]:.1f} s), "
          f"second run {second_gen[0]} ({second_gen[1]:.1f} s)  goal: second run 0")
    print("all runs (tokens/s; kl: s/step): " + "; ".join(
        f"{k}: {', '.join(f'{x:.4f}' if k.startswith('kl') else f'{x:.0f}' for x in v)}" for k, v in results.items()))


if __name__ == "__main__":
    start = time.time()
    main()
    print(f"benchmark wall time {time.time() - start:.1f} s")
