"""``fedmedclip backbone pack|verify|configs``: bring a frozen CLIP to an offline site as checked files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    help="Backbone packs: a CLIP model as files (config, safetensors weights, tokenizer, manifest) that load offline.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(1)


@app.command("pack")
def pack_command(
    source: Annotated[
        Path,
        typer.Argument(
            help="A downloaded model folder (open_clip_config.json + open_clip_pytorch_model.bin or .safetensors + "
            "tokenizer files, as a Hugging Face snapshot has them) or one open_clip checkpoint file.",
            show_default=False,
        ),
    ],
    out: Annotated[Path, typer.Argument(help="The pack folder to create (must not exist).", show_default=False)],
    config: Annotated[
        str | None,
        typer.Option(
            help="Architecture: a shipped config name (see `fedmedclip backbone configs`) or an open_clip config "
            "JSON. Default: the folder's open_clip_config.json.",
            show_default=False,
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="The model name runs and agents use for this backbone (backbone.model). Default: the shipped "
            "config's name.",
            show_default=False,
        ),
    ] = None,
    text_config: Annotated[
        Path | None,
        typer.Option(
            help="config.json of a Hugging Face text tower (e.g. PubMedBERT) when neither the folder nor --config "
            "carries it.",
            show_default=False,
        ),
    ] = None,
    tokenizer: Annotated[
        Path | None,
        typer.Option(help="Folder with the tokenizer files, if not beside the weights.", show_default=False),
    ] = None,
) -> None:
    """Make an offline pack from a downloaded model folder or checkpoint.

    The pack holds the config, the weights as safetensors (a pickle is read with torch.load(weights_only=True)),
    the tokenizer, a Hugging Face text tower's config, and manifest.json with every file's sha256 and the pack
    digest. Prints the digest: pin it in the run config as backbone.weights_digest.
    """
    from fedmedclip.model.packing import pack
    from fedmedclip.model.packs import PackError

    try:
        manifest = pack(source, out, config=config, model_name=model, text_config=text_config, tokenizer_dir=tokenizer)
    except (PackError, OSError) as error:
        raise _fail(str(error)) from None
    total = sum((out / name).stat().st_size for name in manifest.files)
    typer.echo(
        f"packed {manifest.model} into {out}: {len(manifest.files)} files, {total / 1e6:.1f} MB, "
        f"embed dim {manifest.embed_dim}"
    )
    typer.echo(f"digest {manifest.digest}")


@app.command("verify")
def verify_command(
    pack_dir: Annotated[Path, typer.Argument(metavar="PACK", help="The pack folder.", show_default=False)],
) -> None:
    """Check every file against the manifest (present, sha256, nothing unlisted) and the pack digest; exit 1 if not."""
    from fedmedclip.model.packs import PackError, verify

    try:
        manifest = verify(pack_dir)
    except (PackError, OSError) as error:
        raise _fail(str(error)) from None
    typer.echo(f"ok {manifest.model}: {len(manifest.files)} files verified")
    typer.echo(f"digest {manifest.digest}")


@app.command("configs")
def configs_command() -> None:
    """List the shipped architecture configs (configs/backbones/) and the model name each gives a pack."""
    from fedmedclip.model.packs import known_configs, read_config

    for name, path in known_configs().items():
        notes = read_config(path).get("fedmedclip", {})
        typer.echo(f"{name}\tmodel {notes.get('model', name)}\t{notes.get('source', '')}")
