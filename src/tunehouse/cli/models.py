"""`tunehouse models ...`: list/retrieve/delete over HTTP, and the local base-model catalog (add, remove, list --local).

`models add NAME PATH` checks that PATH really is a Hugging Face causal-LM directory before it enters the catalog,
so a bad path fails here with a clear line instead of minutes later inside a training job.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from tunehouse.cli.app import app, build_settings, console
from tunehouse.cli.connection import ApiKeyOpt, BaseUrlOpt, JsonOpt, connect, fail, print_json, print_rows, raw_json

models_app = typer.Typer(no_args_is_help=True, help="Models: base, fine-tuned and checkpoints (add/remove: local).")
app.add_typer(models_app, name="models", rich_help_panel="Server (HTTP)")
DataDirOpt = Annotated[str | None, typer.Option("--data-dir", help="Data dir (env TUNEHOUSE_DATA_DIR)")]


@models_app.command("list")
def models_list(
    local: Annotated[bool, typer.Option("--local", help="Base models of the local catalog; no server")] = False,
    data_dir: DataDirOpt = None,
    base_url: BaseUrlOpt = None,
    api_key: ApiKeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List the models the server can serve: base models, fine-tuned models and checkpoints."""
    if local:
        from tunehouse.catalog import list_base_models

        entries = [asdict(m) for m in list_base_models(build_settings(data_dir))]
        if as_json:
            print_json(entries)
        else:
            rows = [e | {"path": e["path"] or "(embedded GGUF, converted on first use)"} for e in entries]
            print_rows(rows, ["name", "source", "family", "path", "created"], "Base models", "No base models.")
        return
    conn = connect(base_url, api_key, as_json)
    with conn.errors():
        page = raw_json(conn.client().models.with_raw_response.list())
    if as_json:
        print_json(page)
    else:
        print_rows(page.get("data", []), ["id", "owned_by", "created"], "Models", "No models.")


@models_app.command("retrieve")
def models_retrieve(
    model_id: Annotated[str, typer.Option("-i", "--id", help="Model id, e.g. ft:gemma-3-270m:tunehouse:x:abcd1234")],
    base_url: BaseUrlOpt = None,
    api_key: ApiKeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show one model."""
    conn = connect(base_url, api_key, as_json)
    with conn.errors():
        conn.print(raw_json(conn.client().models.with_raw_response.retrieve(model_id)), title="Model")


@models_app.command("delete")
def models_delete(
    model_id: Annotated[str, typer.Option("-i", "--id", help="Fine-tuned model id")],
    base_url: BaseUrlOpt = None,
    api_key: ApiKeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Delete a fine-tuned model."""
    conn = connect(base_url, api_key, as_json)
    with conn.errors():
        conn.print(raw_json(conn.client().models.with_raw_response.delete(model_id)), title="Deleted")


def check_causal_lm_dir(path: Path) -> None:
    """Raise ValueError unless `path` is a Hugging Face causal-LM directory: config, weights, tokenizer."""
    if not path.exists():
        raise ValueError(f"{path}: no such directory")
    if not path.is_dir():
        raise ValueError(f"{path} is a file; give the model's directory (with config.json)")
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{path} is not a Hugging Face model directory (no config.json)") from None
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path / 'config.json'} is not valid JSON: {exc}") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path / 'config.json'} is not a JSON object")
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES as causal

    model_type, archs = config.get("model_type"), config.get("architectures") or []
    causal_classes = set(causal.values())
    if archs and not any(a in causal_classes or a.endswith("ForCausalLM") for a in archs):
        raise ValueError(f"{path} holds a {', '.join(archs)}, not a causal language model")
    if not archs and model_type not in causal:
        raise ValueError(f"{path}: model_type {model_type!r} is not a causal language model known to transformers")
    weights = [*path.glob("*.safetensors"), *path.glob("pytorch_model*.bin")]
    if not weights:
        raise ValueError(f"{path} has no weights (*.safetensors or pytorch_model*.bin)")
    tokenizer_files = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")
    if not any((path / name).is_file() for name in tokenizer_files):
        raise ValueError(f"{path} has no tokenizer (tokenizer.json, tokenizer.model or vocab.json)")


@models_app.command("add")
def models_add(
    name: Annotated[str, typer.Argument(help="Catalog name, e.g. qwen2.5-0.5b")],
    path: Annotated[Path, typer.Argument(help="Local Hugging Face causal-LM directory")],
    family: Annotated[
        str | None, typer.Option("--family", help="Chat format when the tokenizer has no template: gemma | chatml")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing base model of this name")] = False,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Add a local Hugging Face causal-LM directory as a base model (local; no server needed)."""
    from tunehouse.catalog import add_base_model, list_base_models

    if family not in (None, "gemma", "chatml"):
        fail(f"--family must be gemma or chatml, not {family!r}")
    path = path.expanduser().resolve()
    settings = build_settings(data_dir)
    existing = {m.name: m for m in list_base_models(settings)}
    if name in existing and existing[name].source == "local" and not force:
        fail(f"base model '{name}' already exists ({existing[name].path}); use --force to replace it")
    try:
        check_causal_lm_dir(path)
        entry = add_base_model(settings, name, path, family=family)
    except (ValueError, OSError) as exc:
        fail(str(exc))
    if as_json:
        print_json(asdict(entry))
    else:
        console.print(
            f"Added base model [bold]{escape(entry.name)}[/] ({entry.family} chat format) from {escape(str(path))}"
            f" to the catalog in {escape(str(settings.data_dir))}; fine-tune it with -m {escape(entry.name)}",
            soft_wrap=True,
        )


@models_app.command("remove")
def models_remove(
    name: Annotated[str, typer.Argument(help="A base model added with `models add`")],
    data_dir: DataDirOpt = None,
) -> None:
    """Remove a local base model from the catalog (its files are left alone)."""
    from tunehouse.catalog import UnknownModelError, remove_base_model

    try:
        remove_base_model(build_settings(data_dir), name)
    except UnknownModelError as exc:
        fail(f"'{name}' is not a base model added with `models add`. Added: {', '.join(exc.available) or 'none'}")
    console.print(f"Removed base model {escape(name)} from the catalog")
