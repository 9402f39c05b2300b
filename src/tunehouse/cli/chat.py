"""`tunehouse chat MODEL` (interactive, streaming; or one question with -m) and `tunehouse export MODEL`.

`chat` goes through the OpenAI-compatible API with the official SDK, like user code: with --base-url (or
TUNEHOUSE_BASE_URL) to that server, otherwise to an in-process tunehouse server over --data-dir (the model
loads in this process).
`export` works on the local data directory: it resolves the model id through the store and writes files.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from tunehouse.cli.app import app, build_settings, console, err_console
from tunehouse.cli.connection import fail, format_api_error

DataDirOpt = Annotated[str | None, typer.Option("--data-dir", help="Where tunehouse keeps its data (default: "
                                                "TUNEHOUSE_DATA_DIR or ~/.tunehouse)")]


def stream_answer(client, model: str, messages: list[dict], temperature: float, max_tokens: int | None) -> str:
    """Print the answer as it streams; returns the whole text (tool calls shown as JSON lines)."""
    text, calls = "", []
    stream = client.chat.completions.create(model=model, messages=messages, temperature=temperature,
                                            max_completion_tokens=max_tokens, stream=True)
    for chunk in stream:
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        if delta.content:
            text += delta.content
            sys.stdout.write(delta.content)
            sys.stdout.flush()
        for call in delta.tool_calls or []:
            calls.append(call)
            sys.stdout.write(f"\n[tool call] {call.function.name}({call.function.arguments})")
        if chunk.choices[0].finish_reason == "length":
            sys.stdout.write("\n[stopped: max tokens reached]")
    sys.stdout.write("\n")
    sys.stdout.flush()
    return text


@app.command("chat", rich_help_panel="Models")
def chat_command(
    model: Annotated[str, typer.Argument(help="A base model, fine-tuned model (ft:...) or checkpoint id")],
    message: Annotated[str | None, typer.Option("--message", "-m", help="Ask one question, print the answer, "
                                                "exit")] = None,
    system: Annotated[str | None, typer.Option("--system", "-s", help="A system message")] = None,
    temperature: Annotated[float, typer.Option("--temperature", "-t", min=0.0, max=2.0)] = 0.7,
    max_tokens: Annotated[int | None, typer.Option("--max-tokens", min=1, help="Answer length limit")] = 512,
    base_url: Annotated[str | None, typer.Option("--base-url", help="A running server (env TUNEHOUSE_BASE_URL; "
                                                 "default: start one in this process)")] = None,
    api_key: Annotated[str | None, typer.Option("--api-key", help="API key (env TUNEHOUSE_API_KEY)")] = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Chat with a model, streaming its answers. Ctrl-D or /exit quits; /reset starts over."""
    import openai

    from tunehouse.cli.eval import open_client

    history: list[dict] = [{"role": "system", "content": system}] if system else []
    with open_client(base_url, api_key, data_dir) as client:
        try:
            client.models.retrieve(model)
        except openai.APIConnectionError:
            fail(f"cannot reach the server at {client.base_url}")
        except openai.APIStatusError as e:
            fail(format_api_error(e))
        if message is not None:
            _turn(client, model, history, message, temperature, max_tokens)
            return
        err_console.print(f"Chatting with [bold]{escape(model)}[/]. Ctrl-D or /exit quits, /reset starts over.")
        while True:
            try:
                question = console.input("[bold cyan]you>[/] ")
            except (EOFError, KeyboardInterrupt):
                err_console.print()
                return
            if question.strip() in ("/exit", "/quit"):
                return
            if question.strip() == "/reset":
                history = history[:1] if system else []
                continue
            if question.strip():
                console.print("[bold green]model>[/] ", end="")
                _turn(client, model, history, question, temperature, max_tokens)


def _turn(client, model, history, question, temperature, max_tokens) -> None:
    import openai

    history.append({"role": "user", "content": question})
    try:
        answer = stream_answer(client, model, history, temperature, max_tokens)
    except openai.APIConnectionError:
        fail(f"lost the server at {client.base_url}")
    except openai.APIStatusError as e:
        history.pop()
        fail(format_api_error(e))
    history.append({"role": "assistant", "content": answer})


@app.command("export", rich_help_panel="Models")
def export_command(
    model: Annotated[str, typer.Argument(help="A fine-tuned model (ft:...), checkpoint or base model id")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="peft | merged | gguf")],
    out: Annotated[Path, typer.Option("--out", "-o", help="A new (or empty) directory to write")],
    project: Annotated[str, typer.Option("--project", help="The project that owns the model")] = "default",
    data_dir: DataDirOpt = None,
) -> None:
    """Export a model: the PEFT adapter, merged HF safetensors, or GGUF (base + LoRA adapter) for llama.cpp."""
    from tunehouse.inference.export import FORMATS, export_model
    from tunehouse.inference.gguf_convert import ConversionError
    from tunehouse.store.db import connect
    from tunehouse.store.errors import StoreError
    from tunehouse.store.models import resolve_model

    if fmt not in FORMATS:
        raise typer.BadParameter(f"use one of {', '.join(FORMATS)}", param_hint="--format")
    settings = build_settings(data_dir)
    conn = connect(settings)
    try:
        base, adapter_dir = resolve_model(conn, settings, project, model)
    except StoreError as e:
        fail(e.message)
    finally:
        conn.close()
    with console.status(f"Exporting {model} as {fmt}..."):
        try:
            files = export_model(settings, base, adapter_dir, fmt, out, model_id=model)
        except (ValueError, FileNotFoundError, ConversionError) as e:
            fail(str(e))
    for f in files:
        size = f.stat().st_size
        console.print(f"  {escape(str(f))}  [dim]{size / 1e6:.1f} MB[/]")
    console.print(f"[green]Exported[/] {escape(model)} as {fmt} to {escape(str(out))} (see README.txt there)")
