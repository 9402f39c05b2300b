"""Chat rendering and loss masks: exact text and exact trained spans for each message kind."""

from __future__ import annotations

import json

import pytest

from tunehouse.data.render import (
    IGNORE,
    TOOL_INSTRUCTIONS,
    encode_example,
    parse_tool_calls,
    render_chat,
    render_prompt,
)


def chars(text: str) -> list[int]:
    """One token per character, so masks can be read back as text."""
    return [ord(c) for c in text]


def trained_text(example: dict, family="gemma", max_length=10_000) -> list[str]:
    """The trained runs of an example, as strings."""
    ids, labels, _ = encode_example(example, chars, family, max_length)
    runs, current = [], ""
    for i, lab in zip(ids, labels, strict=True):
        if lab != IGNORE:
            assert lab == i
            current += chr(i)
        elif current:
            runs.append(current)
            current = ""
    return runs + ([current] if current else [])


CHAT = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}}}
CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}


def test_gemma_turns_exact():
    text, _ = render_chat(CHAT)
    assert text == ("<bos><start_of_turn>user\nHi<end_of_turn>\n"
                    "<start_of_turn>model\nHello!<end_of_turn>\n")


def test_prompt_ends_with_generation_opener():
    assert render_prompt(CHAT[:1]) == "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"


def test_system_goes_into_first_user_turn():
    text, _ = render_chat([{"role": "system", "content": "Be brief."}, *CHAT])
    assert text.startswith("<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n")


def test_developer_is_treated_like_system():
    a, _ = render_chat([{"role": "developer", "content": "Be brief."}, *CHAT])
    b, _ = render_chat([{"role": "system", "content": "Be brief."}, *CHAT])
    assert a == b


def test_assistant_content_and_end_of_turn_are_trained_not_the_newline():
    assert trained_text({"messages": CHAT}) == ["Hello!<end_of_turn>"]


def test_system_and_user_are_never_trained():
    ex = {"messages": [{"role": "system", "content": "S"}, *CHAT, {"role": "user", "content": "More"},
                       {"role": "assistant", "content": "Sure."}]}
    assert trained_text(ex) == ["Hello!<end_of_turn>", "Sure.<end_of_turn>"]


def test_weight_zero_assistant_is_not_trained():
    ex = {"messages": [CHAT[0], dict(CHAT[1], weight=0), {"role": "user", "content": "Again"},
                       {"role": "assistant", "content": "Hello again!", "weight": 1}]}
    assert trained_text(ex) == ["Hello again!<end_of_turn>"]


def test_tools_go_into_the_prompt_as_json_schemas():
    text = render_prompt(CHAT[:1], tools=[TOOL])
    expected_tools = TOOL_INSTRUCTIONS + json.dumps(TOOL)
    assert text == f"<bos><start_of_turn>user\n{expected_tools}\n\nHi<end_of_turn>\n<start_of_turn>model\n"


def test_assistant_tool_calls_are_rendered_and_trained():
    ex = {"messages": [CHAT[0], {"role": "assistant", "content": None, "tool_calls": [CALL]}]}
    call = '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'
    assert trained_text(ex) == [call + "<end_of_turn>"]


def test_content_then_tool_calls_on_the_next_line():
    ex = {"messages": [CHAT[0], {"role": "assistant", "content": "Checking.", "tool_calls": [CALL]}]}
    assert trained_text(ex)[0].startswith("Checking.\n<tool_call>")


def test_tool_results_are_one_untrained_user_turn():
    msgs = [CHAT[0], {"role": "assistant", "tool_calls": [CALL, dict(CALL, id="call_2")]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            {"role": "tool", "tool_call_id": "call_2", "content": "warm"},
            {"role": "assistant", "content": "Sunny and warm."}]
    text, _ = render_chat(msgs)
    assert ("<start_of_turn>user\n<tool_response>\nsunny\n</tool_response>\n<tool_response>\nwarm\n"
            "</tool_response><end_of_turn>\n<start_of_turn>model\nSunny and warm.<end_of_turn>\n") in text
    assert not any("sunny" in run for run in trained_text({"messages": msgs}))


def test_parse_tool_calls_round_trip():
    ex = {"messages": [CHAT[0], {"role": "assistant", "content": "Checking.", "tool_calls": [CALL]}]}
    generated = trained_text(ex)[0].removesuffix("<end_of_turn>")
    content, calls = parse_tool_calls(generated)
    assert content == "Checking."
    assert len(calls) == 1 and calls[0]["type"] == "function" and calls[0]["id"].startswith("call_")
    assert calls[0]["function"]["name"] == "get_weather"
    assert json.loads(calls[0]["function"]["arguments"]) == {"city": "Paris"}


def test_parse_tool_calls_without_calls_returns_text():
    assert parse_tool_calls("Just text.") == ("Just text.", None)


def test_parse_tool_calls_keeps_malformed_call_as_content():
    text = "<tool_call>{not json}</tool_call>"
    assert parse_tool_calls(text) == (text, None)


def test_chatml_exact_and_mask():
    ex = {"messages": [{"role": "system", "content": "S"}, *CHAT]}
    text, _ = render_chat(ex["messages"], family="chatml")
    assert text == ("<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
                    "<|im_start|>assistant\nHello!<|im_end|>\n")
    assert render_prompt(CHAT[:1], family="chatml").endswith("<|im_start|>assistant\n")
    assert trained_text(ex, "chatml") == ["Hello!<|im_end|>"]


def test_tokenizer_template_masks_prefix_by_prefix():
    def template(messages, tools, add_generation_prompt):
        body = "".join(f"[{m['role']}]{m['content']}[/end]\n" for m in messages)
        return body + ("[assistant]" if add_generation_prompt else "")

    ex = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]}
    # The generation prompt "[assistant]" belongs to the prefix; the trained span is the rest of the turn.
    ids, labels, _ = encode_example(ex, chars, template, 1000)
    trained = "".join(chr(i) for i, lab in zip(ids, labels, strict=True) if lab != IGNORE)
    assert trained == "Yo[/end]"


def test_truncation_keeps_the_start():
    ex = {"messages": [{"role": "user", "content": "x" * 50}, {"role": "assistant", "content": "y" * 50}]}
    ids, labels, truncated = encode_example(ex, chars, "gemma", 40)
    assert truncated and len(ids) == len(labels) == 40
    assert ids == chars(render_chat(ex["messages"])[0])[:40]


def test_text_content_parts_are_joined():
    parts = [{"type": "text", "text": "Hel"}, {"type": "text", "text": "lo"}]
    a, _ = render_chat([{"role": "user", "content": parts}])
    assert "Hello" in a


def test_non_text_part_is_a_clear_error():
    with pytest.raises(ValueError, match="text content"):
        render_chat([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}])


def test_unknown_role_is_a_clear_error():
    with pytest.raises(ValueError, match="Unknown message role 'robot'"):
        render_chat([{"role": "robot", "content": "beep"}])


def test_unknown_family_is_a_clear_error():
    with pytest.raises(ValueError, match="Unknown chat family"):
        render_chat(CHAT, family="llama9")


def test_real_tokenizer_ids_match_whole_text_and_mask_decodes_to_answer(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)

    def encode(s):
        return tok.encode(s, add_special_tokens=False)

    ex = {"messages": [{"role": "user", "content": "Who are you?"}, {"role": "assistant", "content": "I am Gemma-FT."}]}
    ids, labels, truncated = encode_example(ex, encode, "gemma", 1024)
    assert not truncated and ids == encode(render_chat(ex["messages"])[0])
    assert tok.decode([t for t in labels if t != IGNORE]) == "I am Gemma-FT.<end_of_turn>"
