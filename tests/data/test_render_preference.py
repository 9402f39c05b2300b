"""Preference pairs render and mask as two SFT chats: only the output message (and its end of turn) is trained."""

from __future__ import annotations

import pytest

from tests.data.test_render import chars
from tunehouse.data.render import IGNORE, encode_preference

PAIR = {"input": {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yes?"},
                               {"role": "user", "content": "Name?"}]},
        "preferred_output": [{"role": "assistant", "content": "Ada"}],
        "non_preferred_output": [{"role": "assistant", "content": "Bob"}]}


def _trained(ids: list[int], labels: list[int]) -> str:
    return "".join(chr(i) for i, lab in zip(ids, labels, strict=True) if lab != IGNORE)


def test_each_side_is_the_prompt_plus_its_output_and_only_the_output_is_trained():
    (c_ids, c_labels), (r_ids, r_labels), cut = encode_preference(PAIR, chars)
    prompt = ("<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\nYes?<end_of_turn>\n"
              "<start_of_turn>user\nName?<end_of_turn>\n<start_of_turn>model\n")
    assert "".join(map(chr, c_ids)) == prompt + "Ada<end_of_turn>\n"
    assert "".join(map(chr, r_ids)) == prompt + "Bob<end_of_turn>\n"
    # The assistant turn inside input.messages is context, not trained.
    assert _trained(c_ids, c_labels) == "Ada<end_of_turn>" and _trained(r_ids, r_labels) == "Bob<end_of_turn>"
    assert not cut


def test_completion_spellings_are_read_too():
    pair = {"input": PAIR["input"], "preferred_completion": PAIR["preferred_output"],
            "non_preferred_completion": PAIR["non_preferred_output"]}
    assert encode_preference(pair, chars) == encode_preference(PAIR, chars)


def test_truncation_is_reported():
    assert encode_preference(PAIR, chars, max_length=20)[2]


@pytest.mark.parametrize("bad, message", [
    ({"preferred_output": [], "non_preferred_output": []}, "no 'input.messages'"),
    ({**PAIR, "preferred_output": PAIR["preferred_output"] * 2}, "exactly one assistant message"),
    ({**PAIR, "non_preferred_output": "Bob"}, "'non_preferred_output' must be a list"),
])
def test_bad_pairs_are_clear_errors(bad, message):
    with pytest.raises(ValueError, match=message):
        encode_preference(bad, chars)
