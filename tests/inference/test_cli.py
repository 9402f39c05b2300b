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


def test_chat_and_eval_use_the_server_in_tunehouse_base_url(api_settings, tmp_path):
    """With TUNEHOUSE_BASE_URL set, chat and eval talk to that server instead of starting their own.

    The CLI's own --data-dir is empty, so an in-process server there would not know the fine-tuned model.
    """
    import json

    from tunehouse.cli import app
    from tunehouse.cli.local_server import local_server

    empty = str(tmp_path / "empty-data")
    test = tmp_path / "t.jsonl"
    test.write_text(json.dumps({"messages": [{"role": "user", "content": PROMPTS[0]},
                                             {"role": "assistant", "content": ALPHA_TEXT}]}) + "\n")
    with local_server(api_settings) as url:
        env = {"TUNEHOUSE_BASE_URL": url}
        chat = CliRunner().invoke(app, ["chat", FT_A, "-m", PROMPTS[0], "-t", "0", "--max-tokens", "32",
                                        "--data-dir", empty], env=env)
        assert chat.exit_code == 0, chat.output
        assert ALPHA_TEXT in chat.output
        ev = CliRunner().invoke(app, ["eval", "--model", FT_A, "--baseline", FT_B, "--test", str(test), "--json",
                                      "--data-dir", empty, "--out", str(tmp_path / "report")], env=env)
        assert ev.exit_code == 0, ev.output
        assert json.loads(ev.stdout[ev.stdout.index("{"):])["n"] == 1
    without = CliRunner().invoke(app, ["chat", FT_A, "-m", PROMPTS[0], "--data-dir", empty],
                                 env={"TUNEHOUSE_BASE_URL": ""})
    assert without.exit_code == 1 and "does not exist" in without.output  # the in-process server of `empty`
