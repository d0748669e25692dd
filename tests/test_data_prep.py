"""Data prep rules on hand-made examples (Japanese included) and the `data prep` verb."""

import json

import pytest

from skillgraft.cli import main
from skillgraft.data.clean import cap_repeats, normalise_width, scrub
from skillgraft.data.dedup import dedup
from skillgraft.data.prep import PrepOptions, prepare


def test_seed002_width_rules():
    # half-width !?~ -> full-width; full-width digits -> half-width; nothing else touched
    assert normalise_width("やったー!本当?すごい~ ２０２４年", "seed002") == "やったー！本当？すごい〜 2024年"
    assert normalise_width("ＡＢＣ", "seed002") == "ＡＢＣ"


def test_nfkc_preset_differs_from_seed002():
    # NFKC folds full-width letters/punctuation to ASCII and half-width katakana to full-width
    assert normalise_width("ＡＢＣ！ ｶﾀｶﾅ", "nfkc") == "ABC! カタカナ"
    assert normalise_width("ＡＢＣ! ｶﾀｶﾅ", "nfkc+seed002") == "ABC！ カタカナ"
    with pytest.raises(ValueError):
        normalise_width("x", "nope")


def test_cap_repeats_seed_examples():
    assert cap_repeats("寂しがりか〜〜〜〜") == ("寂しがりか〜〜", 1)
    assert cap_repeats("まじかああ〜〜〜〜〜〜") == ("まじかああ〜〜", 1)
    assert cap_repeats("wwwww ok!!!", 3) == ("www ok!!!", 1)
    assert cap_repeats("〜〜 ああ", 2) == ("〜〜 ああ", 0)
    assert cap_repeats("〜〜〜〜", 0) == ("〜〜〜〜", 0)


def test_scrub_counts_each_kind():
    text = ("mail me at taro.yamada@example.co.jp or see https://example.com/a?b=1 "
            "call 03-1234-5678 or +81 90-1234-5678, thanks @taro_y")
    out, counts = scrub(text)
    assert counts == {"email": 1, "url": 1, "phone": 2, "handle": 1}
    assert "example" not in out and "1234" not in out and "@taro" not in out
    assert out.count("<PHONE>") == 2 and "<EMAIL>" in out and "<URL>" in out and "<USER>" in out
    # a plain number, a time or a year is not a phone number
    assert scrub("2024年 12:30 に 3 人")[1] == {}


def test_dedup_exact_and_near():
    texts = ["今日はいい天気ですね", "今日はいい天気ですね", "今日はいい天気ですね！", "明日は雨が降るらしい",
             "Hello  World", "hello world"]
    keep, exact, near = dedup(texts, near_threshold=0.7)
    assert keep == [0, 3, 4]
    assert (exact, near) == (2, 1)
    keep_exact_only, _, near_off = dedup(texts, near_threshold=1.0)
    assert keep_exact_only == [0, 2, 3, 4] and near_off == 0


def test_prepare_pipeline_and_split():
    records = [{"text": t} for t in [
        "今日は〜〜〜〜〜楽しかった!", "今日は〜〜楽しかった！",  # same after normalising + capping
        "連絡は foo@bar.com まで", "https://t.co/xyz",  # the second is empty once scrubbed (deleted)
        "ライブ最高だった", "ご飯おいしい", "また明日ね", "おやすみ〜"]]
    result = prepare(records, PrepOptions(placeholders=False, validation=0.25, seed=3))
    texts = [r["text"] for r in result.train + result.validation]
    assert "今日は〜〜楽しかった！" in texts and len(texts) == 6
    assert "連絡は まで" in texts
    assert result.changes["dropped_empty"] == 1
    assert result.changes["dropped_exact_duplicates"] == 1
    assert result.changes["scrubbed_email"] == 1 and result.changes["scrubbed_url"] == 1
    assert result.changes["runs_capped"] == 1
    assert len(result.validation) == 2 and result.before["records"] == 8 and result.after["records"] == 6
    again = prepare(records, PrepOptions(placeholders=False, validation=0.25, seed=3))
    assert again.validation == result.validation  # seeded split


def test_prep_cli_writes_splits_and_stats(tmp_path, capsys):
    src = tmp_path / "tweets.txt"
    src.write_text("すごい~~~~\n@friend おはよう\nおはよう\n" + "\n".join(f"ツイート{i}番" for i in range(8)),
                   encoding="utf-8")
    out = tmp_path / "clean" / "train.jsonl"
    assert main(["data", "prep", str(src), "-o", str(out), "--validation", "0.2", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    train = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    val = [json.loads(line) for line in (tmp_path / "clean" / "train.validation.jsonl").read_text().splitlines()]
    assert summary["train_records"] == len(train) and summary["validation_records"] == len(val) == 2
    all_texts = {r["text"] for r in train + val}
    assert "すごい〜〜" in all_texts and "<USER> おはよう" in all_texts
    assert summary["changes"]["scrubbed_handle"] == 1 and summary["before"]["records"] == 11


def test_prep_empty_after_cleaning_is_one_error(tmp_path, capsys):
    src = tmp_path / "urls.txt"
    src.write_text("https://a.example\nhttp://b.example/x\n", encoding="utf-8")
    rc = main(["data", "prep", str(src), "-o", str(tmp_path / "o.jsonl"), "--delete"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error:") and "no examples left" in err and err.count("\n") == 1
