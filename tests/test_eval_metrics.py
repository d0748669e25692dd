"""Every metric against values computed by hand on hand-written strings."""

from __future__ import annotations

import math

import pytest

from skillgraft.evaluate.metrics import answers, judge, language, memorization, repetition, rouge, style
from skillgraft.evaluate.text import first_segment, normalize_answer, units


def test_first_segment_cuts_follow_up_turns():
    out = "Paris is the capital.\nQ: What is the capital of Italy?\nA: Rome"
    assert first_segment(out) == "Paris is the capital."
    assert first_segment("東京です。\n\n質問: 次は？") == "東京です。"
    assert first_segment("no follow-up") == "no follow-up"


def test_normalize_answer_folds_case_width_and_punctuation():
    assert normalize_answer("  ＰＡＲＩＳ. ") == "paris"
    assert normalize_answer("«Tokyo»!") == "tokyo"


def test_units_split_cjk_by_character_and_latin_by_word():
    assert units("東京 is big") == ["東", "京", "is", "big"]
    assert units("서울입니다") == ["서", "울", "입", "니", "다"]


def test_keyword_first_segment_vs_all():
    out = "It is Paris.\nQ: And Italy?\nA: Rome and Milan"
    # 1 of 3 keywords in the answer proper; 3 of 3 if rambling follow-ups count (seed 003)
    assert answers.keyword_score(out, "Paris;Rome;Milan") == pytest.approx(1 / 3)
    assert answers.keyword_score(out, "Paris;Rome;Milan", segment="all") == 1.0
    assert answers.keyword_score(out, ["paris", "berlin"]) == 0.5


def test_keyword_respects_word_edges_for_latin_but_not_cjk():
    assert answers.keyword_score("Tokyo", "O") == 0.0  # "O" (oxygen) is not inside "Tokyo"
    assert answers.keyword_score("The symbol is O.", "O") == 1.0
    assert answers.keyword_score("17 days", "7") == 0.0
    assert answers.keyword_score("7日です", "7") == 1.0
    assert answers.keyword_score("首都は東京です", "東京") == 1.0


def test_exact_match_numeric_boxed_last_number_and_text():
    assert answers.exact_match("3 + 4 = 7, so \\boxed{12} apples", "12") == 1.0
    assert answers.exact_match("3 + 4 = 7, then 7 + 5 = 12.", "12") == 1.0
    assert answers.exact_match("12 first, then 13", "12") == 0.0
    assert answers.exact_match("The total is 1,234 yen", "1234") == 1.0
    assert answers.exact_match("答えは５０個です", "50") == 1.0  # full-width digits
    assert answers.exact_match("12.0", "12") == 1.0
    assert answers.exact_match("no number", "12") == 0.0
    assert answers.exact_match(" Paris.\nQ: next", "paris") == 1.0
    assert answers.exact_match("Paris, France", "Paris") == 0.0


def test_choice_loglik_and_generated():
    assert answers.choice_loglik([-3.0, -1.0, -2.0], 1) == 1.0
    assert answers.choice_loglik([-3.0, -1.0, -2.0], 0) == 0.0
    assert answers.choice_loglik([-1.0, -1.0], 0) == 0.0  # a tie is not a win
    choices = ["Paris", "Rome", "Berlin"]
    assert answers.parse_choice("2. Rome", choices) == 1
    assert answers.parse_choice("The answer is 3", choices) == 2
    assert answers.parse_choice("I think Berlin.", choices) == 2
    assert answers.parse_choice("7", choices) is None
    assert answers.choice_generated("A. 1\nQ: next 2", choices, 0) == 1.0
    assert answers.answer_index(choices, "Rome") == 1
    with pytest.raises(ValueError):
        answers.answer_index(choices, 3)


def test_retention_ratio():
    assert answers.retention(0.45, 0.9) == pytest.approx(0.5)
    assert math.isnan(answers.retention(0.3, 0.0))


def test_rouge2_english_by_hand():
    # reference bigrams: the-cat, cat-sat, sat-on, on-the, the-mat (5)
    # output bigrams:    the-cat, cat-sat, sat-on, on-a, a-mat (5); 3 shared -> P=R=F=0.6
    assert rouge.rouge2("The cat sat on a mat", "the cat sat on the mat") == pytest.approx(0.6)


def test_stock_rouge_score_drops_japanese_and_the_cjk_variant_fixes_it():
    from rouge_score import rouge_scorer

    ref = "東京は日本の首都です"
    stock = rouge_scorer.RougeScorer(["rouge2"]).score(ref, ref)["rouge2"].fmeasure
    assert stock == 0.0  # the pitfall: identical Japanese texts score 0
    assert rouge.rouge2(ref, ref, tokenizer="stock") == 0.0
    assert rouge.rouge2(ref, ref) == pytest.approx(1.0)  # auto picks the CJK tokenizer
    # character bigrams: ref 東京 京は は日 日本 本の の首 首都 都で です (9);
    # out "東京は首都です": 東京 京は は首 首都 都で です (6); shared 5 -> P=5/6 R=5/9
    p, r = 5 / 6, 5 / 9
    assert rouge.rouge2("東京は首都です", ref) == pytest.approx(2 * p * r / (p + r))
    assert rouge.rouge2("서울", "서울") == pytest.approx(1.0)


def test_rouge2_accepts_a_custom_tokenizer():
    assert rouge.rouge2("a b c", "a b d", tokenizer=str.split) == pytest.approx(0.5)


def test_language_detection():
    assert language.detect_language("The capital of France is Paris.") == "en"
    assert language.detect_language("フランスの首都はパリです。") == "ja"
    assert language.detect_language("프랑스의 수도는 파리입니다.") == "ko"
    assert language.detect_language("   ") is None
    assert language.language_match("The capital is Tokyo.", "ja") == 0.0
    assert language.language_match("首都は東京です。", "ja") == 1.0


def test_style_polite_plain_symbols_and_markers():
    text = "今日は晴れです。明日も行きます！楽しいね〜 これは本だ"
    # four sentences: です (polite), ます！ (polite), いね〜 (plain), だ (plain)
    scores = style.style_scores(text, {"laugh": r"w{2,}|笑"})
    assert scores["polite"] == pytest.approx(0.5)
    assert scores["plain"] == pytest.approx(0.5)
    assert scores["symbols"] == pytest.approx(2 / 4)  # ！ and 〜
    assert scores["marker.laugh"] == 0.0
    assert style.style_scores("草ｗｗｗ", {"laugh": r"w{2,}"})["marker.laugh"] == 1.0  # NFKC folds ｗ
    assert style.ending_form("Hello there.") is None
    assert style.style_scores("")["polite"] == 0.0


def test_repetition_measures():
    tokens = "a b c a b c a b".split()
    # trigrams: abc bca cab abc bca cab = 6, unique 3 -> rate 0.5
    assert repetition.repeated_ngram_rate(tokens, 3) == pytest.approx(0.5)
    assert repetition.distinct_n(tokens, 1) == pytest.approx(3 / 8)
    assert repetition.distinct_n(tokens, 2) == pytest.approx(3 / 7)
    assert repetition.longest_run("はい〜〜〜〜") == 4
    scores = repetition.repetition_scores("oooooo oooooo oooooo")
    assert scores["longest_char_run"] == 18.0  # spaces ignored
    assert scores["longest_token_run"] == 3.0
    assert scores["distinct_1"] == pytest.approx(1 / 3)
    assert repetition.repetition_scores("")["rate"] == 0.0
    # symbols count as tokens: は い 〜 〜 〜 〜 -> trigrams はい〜 い〜〜 〜〜〜 〜〜〜: 1 of 4 repeats
    wave = repetition.repetition_scores("はい〜〜〜〜")
    assert (wave["rate"], wave["longest_token_run"], wave["distinct_1"]) == (0.25, 4.0, 0.5)
    assert repetition.repetition_scores("city , , , , ,")["longest_token_run"] == 5.0


def test_memorization_copy_detection():
    corpus = ["今日はラーメンを食べた。最高！", "I love cats and dogs."]
    assert memorization.longest_common_substring("昨日はラーメンを食べた", corpus) == "日はラーメンを食べた"
    scores = memorization.memorization_scores("I love cats and dogs.", corpus, n=2)
    assert scores["copied"] == 1.0
    assert scores["ngram_overlap"] == 1.0
    fresh = memorization.memorization_scores("Birds sing loudly", corpus, n=2)
    assert fresh["ngram_overlap"] == 0.0
    # longest copied span is " lo" (from " loudly" / " love"): 3 chars out of 17
    assert memorization.longest_common_substring("Birds sing loudly", corpus) == " lo"
    assert fresh["lcs_chars"] == 3.0
    assert fresh["copied"] == pytest.approx(3 / 17)


def test_judge_prompt_and_grade_parsing():
    messages = judge.judge_messages("Q?", "ans", "ref", rubric="RUBRIC")
    assert messages[0] == {"role": "system", "content": "RUBRIC"}
    assert "ref" in messages[1]["content"] and "ans" in messages[1]["content"]
    assert judge.parse_grade("Grade: 10") == 10.0
    assert judge.parse_grade("7/10") == 7.0
    assert judge.parse_grade("no idea") is None


def test_score_keys_are_what_score_item_gives():
    """The names a sweep objective may use, known before anything runs, are exactly the keys an
    item's scores carry."""
    from skillgraft.evaluate.metrics import MetricContext, score_item, score_keys
    from skillgraft.evaluate.suites import Item, MetricSpec

    item = Item(id="a", prompt="Say hi", reference="hi", keywords=["hi"])
    for spec in (MetricSpec(name="style", markers={"persona": "ahoy"}, target="marker.persona"),
                 MetricSpec(name="repetition", n=3), MetricSpec(name="keyword")):
        scores, _ = score_item(spec, item, "Ahoy, hi there. Fair winds!", probe_set=None, ctx=MetricContext())
        assert sorted(score_keys(spec)) == sorted(scores), spec.name
    assert "style.marker.persona" in score_keys(MetricSpec(name="style", markers={"persona": "ahoy"}))
