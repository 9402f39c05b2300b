"""One test per quality warning: reported at its line, and the file stays trainable."""

from __future__ import annotations

from tests.data.conftest import chat, good_chats
from tunehouse.data.quality import count_words
from tunehouse.data.validation import validate_file


def _warnings(path, **kw) -> list[tuple[int | None, str]]:
    report = validate_file(path, **kw)
    assert report.ok, report.errors
    return [(w.line, w.code) for w in report.warnings]


def _with(bad, at: int = 4) -> list:
    rows = good_chats(10)
    rows.insert(at - 1, bad)
    return rows


def test_good_examples_give_no_warnings(write_jsonl):
    assert _warnings(write_jsonl(good_chats(10))) == []


def test_no_system_message(write_jsonl):
    # Also the one example whose system prompt is missing: only this warning, not an inconsistency.
    assert _warnings(write_jsonl(_with(chat(system=None)))) == [(4, "no_system_message")]


def test_no_user_message(write_jsonl):
    bad = {"messages": [{"role": "system", "content": "You are a geography tutor."},
                        {"role": "assistant", "content": "Paris is the capital of France."}]}
    assert _warnings(write_jsonl(_with(bad))) == [(4, "no_user_message")]


def test_short_message(write_jsonl):
    assert _warnings(write_jsonl(_with(chat(user="?")))) == [(4, "short_message")]


def test_brief_assistant_answer(write_jsonl):
    assert _warnings(write_jsonl(_with(chat(answer="Paris.")))) == [(4, "brief_assistant_answer")]


def test_brief_assistant_answer_counts_each_cjk_character_as_a_word(write_jsonl):
    # A full Chinese sentence has no spaces; it is not brief. Two characters are.
    assert _warnings(write_jsonl(_with(chat(answer="巴黎是法国的首都。")))) == []
    assert _warnings(write_jsonl(_with(chat(answer="巴黎")))) == [(4, "brief_assistant_answer")]
    assert count_words("東京 is big") == 4 and count_words("Ça va bien") == 3


def test_refusal(write_jsonl):
    bad = chat(answer="As an AI language model, I cannot have opinions about cities.")
    assert _warnings(write_jsonl(_with(bad))) == [(4, "refusal")]


def test_last_message_not_assistant(write_jsonl):
    bad = chat()
    bad["messages"].append({"role": "user", "content": "Thanks, and what about Spain?"})
    assert _warnings(write_jsonl(_with(bad))) == [(4, "last_message_not_assistant")]


def test_no_trained_tokens(write_jsonl):
    bad = chat()
    bad["messages"][2]["weight"] = 0
    assert _warnings(write_jsonl(_with(bad))) == [(4, "no_trained_tokens")]


def test_inconsistent_system_prompt(write_jsonl):
    rows = _with(chat(system="You are a pirate. Answer like one."), at=6)
    assert _warnings(write_jsonl(rows)) == [(6, "inconsistent_system_prompt")]


def test_duplicate_example(write_jsonl):
    rows = good_chats(10)
    rows.insert(7, rows[1])
    assert _warnings(write_jsonl(rows)) == [(8, "duplicate_example")]
    assert "line 2" in validate_file(write_jsonl(rows)).warnings[0].message


def test_train_valid_overlap(write_jsonl):
    train = write_jsonl(good_chats(10), name="train.jsonl")
    valid = write_jsonl([chat(user="A fresh question here?"), good_chats(10)[5]], name="valid.jsonl")
    report = validate_file(train, validation_path=valid)
    assert report.ok and report.warnings == []
    assert [(w.line, w.code) for w in report.validation.warnings] == [(2, "train_valid_overlap")]
    assert "line 6" in report.validation.warnings[0].message


def test_too_long_for_the_context(write_jsonl):
    bad = chat(answer="word " * 400)  # ~500 estimated tokens
    assert _warnings(write_jsonl(_with(bad)), context_length=256) == [(4, "too_long")]
    assert _warnings(write_jsonl(_with(bad)), context_length=4096) == []


def test_validation_file_errors_make_the_report_not_ok(write_jsonl):
    train = write_jsonl(good_chats(10), name="train.jsonl")
    valid = write_jsonl([chat(), {"prompt": "a", "completion": "b"}], name="valid.jsonl")
    report = validate_file(train, validation_path=valid)
    assert report.errors == [] and not report.ok
    assert [(e.line, e.code) for e in report.blocking_errors()] == [(2, "mixed_formats")]


def test_overfit_risk_when_explicit_epochs_pass_the_auto_rule(write_jsonl):
    path = write_jsonl(good_chats(50))  # auto: 3 epochs
    assert _warnings(path, n_epochs=4) == [(None, "overfit_risk")]
    assert _warnings(path, n_epochs=3) == [] and _warnings(path) == []
