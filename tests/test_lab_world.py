"""The lab world: seeded determinism, name splits, and the tokenizer round trip."""

from __future__ import annotations

from skillgraft.lab import world as W
from skillgraft.lab.build import build_tokenizer


def test_world_is_a_pure_function_of_the_seed():
    a, b, c = W.make_world(3), W.make_world(3), W.make_world(4)
    assert a == b
    assert a.names_a != c.names_a
    assert W.pretrain_docs(a, 50, seed=0) == W.pretrain_docs(b, 50, seed=0)
    assert W.pretrain_docs(a, 50, seed=0) != W.pretrain_docs(a, 50, seed=1)
    assert W.skill_items(a, "B", "heldout", 30, seed=2) == W.skill_items(b, "B", "heldout", 30, seed=2)
    assert W.echo_items(a, 10, seed=0) == W.echo_items(b, 10, seed=0)


def test_languages_share_function_words_and_differ_in_names():
    world = W.make_world(0)
    assert len(set(world.names_a)) == len(set(world.names_b)) == W.N_NAMES
    assert not set(world.names_a) & set(world.names_b)
    assert not set(world.names_a) & set(W.FUNCTION_WORDS)
    doc = W.pretrain_docs(world, 1, seed=0)[0]
    translated = world.translate(doc).split()
    assert [w for w in translated if w in W.FUNCTION_WORDS] == [w for w in doc.split() if w in W.FUNCTION_WORDS]
    assert not any(w in world.names_a for w in translated)


def test_skill_items_answer_from_context_with_held_out_names():
    world = W.make_world(0)
    sft = set(world.names("A", "sft"))
    held_b = set(world.names("B", "heldout"))
    for item in W.skill_items(world, "A", "sft", 100, seed=0):
        assert item.answer in item.prompt.split()[:2]          # the answer is read from the statement
        assert set(item.prompt.split()) - set(W.FUNCTION_WORDS) <= sft
    for item in W.skill_items(world, "B", "heldout", 100, seed=0):
        assert set(item.prompt.split()) - set(W.FUNCTION_WORDS) <= held_b
        subj, obj, verb = item.statement.split()[:3]
        expected = obj if f"Q: {subj} what {verb} ?" in item.prompt else subj
        assert item.answer == expected


def test_pretraining_never_shows_answer_then_stop():
    """Pretraining shows questions but only verbose answers (the restated statement)."""
    world = W.make_world(0)
    for doc in W.pretrain_docs(world, 300, seed=0):
        if " A: " in doc:
            after = doc.split(" A: ")[1].split()
            assert len(after) == 4 and after[-1] == "."


def test_cp_mix_is_mostly_b_with_code_switching():
    world = W.make_world(0)
    docs = W.pretrain_docs(world, 400, seed=100, mix={"B": 0.85, "switch": 0.15})
    a_names = set(world.names_a)
    with_a = sum(any(w in a_names for w in d.split()) for d in docs)
    assert 0.05 * len(docs) < with_a < 0.25 * len(docs)


def test_tokenizer_round_trip_and_saved_folder(tmp_path):
    from transformers import AutoTokenizer

    world = W.make_world(0)
    tok = build_tokenizer(world)
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    texts = W.pretrain_docs(world, 50, seed=0, mix={"A": 0.5, "B": 0.5}) + [
        it.prompt for it in W.skill_items(world, "B", "heldout", 20, seed=0)]
    for text in texts:
        ids = loaded(text)["input_ids"]
        assert ids[0] == loaded.bos_token_id
        assert loaded.unk_token_id not in ids
        assert loaded.decode(ids, skip_special_tokens=True) == text
    chat = loaded.apply_chat_template([{"role": "user", "content": texts[0]}], tokenize=False,
                                      add_generation_prompt=True)
    assert chat.startswith("<|im_start|>user ") and chat.endswith("<|im_start|>assistant ")
    assert loaded.unk_token_id not in loaded(chat, add_special_tokens=False)["input_ids"]


def test_reliability_rule_extends_base_until_the_check_passes_and_records_rounds():
    from skillgraft.lab.build import apply_reliability_rule

    def run(scores, max_rounds=2):
        calls = []
        values = iter(scores)
        result = apply_reliability_rule(
            0, lambda base: ("skilled", base), lambda skilled: next(values),
            lambda base, r: calls.append(r) or base + 1, threshold=0.9, max_rounds=max_rounds)
        return result, calls

    (base, skilled, rounds, checks), calls = run([0.95])
    assert (base, skilled, rounds, checks, calls) == (0, ("skilled", 0), 0, [0.95], [])
    (base, skilled, rounds, checks), calls = run([0.2, 0.5, 0.91])
    assert (base, skilled, rounds, checks, calls) == (2, ("skilled", 2), 2, [0.2, 0.5, 0.91], [1, 2])
    (base, _, rounds, checks), calls = run([0.1, 0.1, 0.1, 0.99])   # gives up after max_rounds
    assert (base, rounds, checks) == (2, 2, [0.1, 0.1, 0.1])
