"""`tunehouse chat`: one question with -m, and the interactive loop, streaming through an in-process server."""

from __future__ import annotations

from typer.testing import CliRunner

from tests.inference.conftest import ALPHA_TEXT, BETA_TEXT, FT_A, FT_B, PROMPTS


def run(settings, *args, input=None):
    from tunehouse.cli import app

    return CliRunner().invoke(app, ["chat", *args, "--data-dir", str(settings.data_dir), "-t", "0"], input=input)


def test_chat_one_question(api_settings):
    r = run(api_settings, FT_A, "-m", PROMPTS[0])
    assert r.exit_code == 0, r.output
    assert ALPHA_TEXT in r.output


def test_chat_interactive_keeps_going_until_exit(api_settings):
    r = run(api_settings, FT_B, input=f"{PROMPTS[1]}\n/reset\n{PROMPTS[2]}\n/exit\n")
    assert r.exit_code == 0, r.output
    assert r.output.count(BETA_TEXT) == 2


def test_chat_unknown_model_is_one_line_error(api_settings):
    r = run(api_settings, "ft:tiny-gemma:tunehouse:nope:00000000", "-m", "hi")
    assert r.exit_code == 1 and "does not exist" in r.output and "Traceback" not in r.output
