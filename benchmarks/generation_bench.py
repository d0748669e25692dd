"""Batched generation vs the seeds' one-prompt-at-a-time `generate` loop, same greedy outputs.

    python benchmarks/generation_bench.py [--prompts 64] [--max-new-tokens 32] [--batch-size 64]

Builds a tiny random Llama (or uses --model DIR), generates for the same prompts both ways
in one process, asserts the outputs are identical and prints the throughput ratio
(goal: batched ≥ 4×). Tiny models on a shared CPU run fastest on one torch thread, so the
default is --threads 1 for both sides; the ratio is what matters.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]  # the tiny test model builder lives with the tests


def one_at_a_time(model, tokenizer, prompts: list[str], max_new_tokens: int) -> list[str]:
    """What the seeds' notebooks do: tokenize, generate and decode each prompt on its own."""
    import torch

    outputs = []
    for prompt in prompts:
        enc = tokenizer(prompt, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
        outputs.append(tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True).strip())
    return outputs


def plain_batched(model, tokenizer, prompts: list, max_new_tokens: int, batch_size: int) -> int:
    """transformers' own batched greedy `generate` (left padding, the chat template applied by
    the tokenizer where prompts are chats): the generated tokens, counted without padding."""
    import torch

    tokenizer.padding_side = "left"
    texts = [p if isinstance(p, str) else tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
             for p in prompts]
    tokens = 0
    for start in range(0, len(texts), batch_size):
        enc = tokenizer(texts[start:start + batch_size], return_tensors="pt", padding=True,
                        add_special_tokens=isinstance(prompts[0], str))
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
        tokens += int((out[:, enc["input_ids"].shape[1]:] != tokenizer.pad_token_id).sum())
    return tokens


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model", help="checkpoint folder (default: a tiny random Llama built here)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chat", action="store_true", help="Ask the built-in retention_tune questions through "
                        "the model's chat template (as `skillgraft eval` does) instead of random words, and "
                        "compare with a plain batched `generate` only (goal ≥ 0.9×).")
    args = parser.parse_args(argv)
    if args.chat:
        return chat_main(args)

    import torch

    from skillgraft.evaluate.backends import GenerationSettings
    from skillgraft.evaluate.backends.hf import HFBackend
    from tiny_models import DEFAULT_WORDS, build_tiny_model

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model or str(build_tiny_model(Path(tmp) / "tiny", "llama", seed=args.seed, dtype="float32"))
        backend = HFBackend.from_path(model_dir)
        rng = random.Random(args.seed)
        words = [w for w in DEFAULT_WORDS if w.isalpha()]
        prompts = [" ".join(rng.choice(words) for _ in range(rng.randint(2, 24))) for _ in range(args.prompts)]
        settings = GenerationSettings(max_new_tokens=args.max_new_tokens)

        backend.generate(prompts[:2], settings, batch_size=2)  # warm-up, both paths share it
        start = time.perf_counter()
        reference = one_at_a_time(backend.model, backend.tokenizer, prompts, args.max_new_tokens)
        loop_s = time.perf_counter() - start
        start = time.perf_counter()
        batched = backend.generate(prompts, settings, batch_size=args.batch_size)
        batch_s = time.perf_counter() - start

    mismatches = [i for i, (a, b) in enumerate(zip(reference, batched)) if a != b]
    tokens = sum(len(backend.tokenizer(o, add_special_tokens=False)["input_ids"]) for o in batched)
    print(f"tiny llama, {args.prompts} prompts, max_new_tokens={args.max_new_tokens}, "
          f"torch threads={args.threads}, batch size={args.batch_size}")
    print(f"{'method':<28}{'seconds':>10}{'prompts/s':>12}{'tokens/s':>12}")
    print(f"{'one prompt at a time':<28}{loop_s:>10.2f}{args.prompts / loop_s:>12.1f}{tokens / loop_s:>12.0f}")
    print(f"{'batched (skillgraft)':<28}{batch_s:>10.2f}{args.prompts / batch_s:>12.1f}{tokens / batch_s:>12.0f}")
    ratio = loop_s / batch_s
    print(f"throughput ratio batched / loop: {ratio:.1f}x (goal >= 4x)")
    print(f"identical greedy outputs: {len(prompts) - len(mismatches)}/{len(prompts)}")
    assert not mismatches, f"batched output differs for prompts {mismatches[:5]}"
    return 0 if ratio >= 4 else 1


def chat_main(args) -> int:
    """`eval`'s generation on a chat model against transformers' batched `generate`, same prompts."""
    import torch

    from skillgraft.evaluate.backends.hf import HFBackend
    from skillgraft.evaluate.runner import as_messages
    from skillgraft.evaluate.suites import load_suite

    torch.set_num_threads(args.threads)
    backend = HFBackend.from_path(args.model)
    probe_set = load_suite("retention_tune").sets[0]
    settings = backend.applied(probe_set.generation.model_copy(update={"max_new_tokens": args.max_new_tokens}))
    prompts = [as_messages(item.input, settings) for item in probe_set.items[:args.prompts]]
    backend.generate(prompts[:2], settings, batch_size=2)  # warm-up
    rows = []
    for attempt in range(2):   # alternated twice: both see the same machine
        start = time.perf_counter()
        ours = sum(len(r.answer_ids) for r in backend.generate_tokens(prompts, settings, batch_size=args.batch_size))
        rows.append(("skillgraft eval", ours, time.perf_counter() - start))
        start = time.perf_counter()
        plain = plain_batched(backend.model, backend.tokenizer, prompts, args.max_new_tokens, args.batch_size)
        rows.append(("plain batched generate", plain, time.perf_counter() - start))
    print(f"{Path(args.model).name}, {len(prompts)} retention_tune questions (chat), max_new_tokens="
          f"{args.max_new_tokens}, torch threads={args.threads}, batch size={args.batch_size}")
    print(f"{'method':<28}{'tokens':>8}{'seconds':>10}{'tokens/s':>10}")
    rate = {}
    for name, tokens, seconds in rows:
        print(f"{name:<28}{tokens:>8}{seconds:>10.2f}{tokens / seconds:>10.1f}")
        rate[name] = max(rate.get(name, 0.0), tokens / seconds)
    ratio = rate["skillgraft eval"] / rate["plain batched generate"]
    print(f"tokens/s ratio skillgraft / plain (best of two each): {ratio:.2f}x (goal >= 0.9x)")
    return 0 if ratio >= 0.9 else 1


if __name__ == "__main__":
    sys.exit(main())
