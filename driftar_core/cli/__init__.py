"""The ``driftar`` command line: a click group whose commands load lazily.

Each command lives in its own module and is imported only when invoked, so ``driftar --help`` and
``driftar plugins`` never import torch (a test checks ``sys.modules``). Plugins add commands through
the ``driftar_register_commands(cli)`` hook.
"""
from __future__ import annotations

import importlib
import sys

import click

# command name -> (module, attribute, one-line help shown by --help without importing the module)
LAZY_COMMANDS: dict[str, tuple[str, str, str]] = {
    "train": ("driftar_core.cli.train", "train", "Train a model from a recipe (baseline or Drift-AR)."),
    "sample": ("driftar_core.cli.sample", "sample", "Sample images from a run, a model directory or a zoo model."),
    "eval": ("driftar_core.cli.evaluate", "eval_cmd", "Evaluate sample quality (FD, precision/recall, accuracy)."),
    "bench": ("driftar_core.cli.bench", "bench", "Benchmark models side by side (latency, passes, quality)."),
    "export": ("driftar_core.cli.export", "export", "Export a Drift-AR model to ONNX / TensorRT (exporter plugins)."),
    "plugins": ("driftar_core.cli.plugins", "plugins", "List installed plugins and what each contributed."),
    "zoo": ("driftar_core.cli.zoo", "zoo", "List and inspect pretrained models shipped in the zoo."),
    "models": ("driftar_core.cli.plugins", "models", "List registered model architectures (fnmatch pattern)."),
}


class LazyGroup(click.Group):
    """click's documented lazy-loading pattern: import a command's module on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(LAZY_COMMANDS))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in LAZY_COMMANDS and name not in self.commands:
            module, attr, _ = LAZY_COMMANDS[name]
            try:
                cmd = getattr(importlib.import_module(module), attr)
            except ModuleNotFoundError as e:
                raise click.ClickException(f"command {name!r} is not available: {e}") from e
            self.add_command(cmd, name)
        return super().get_command(ctx, name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(n, LAZY_COMMANDS[n][2]) for n in LAZY_COMMANDS]
        rows += [(n, c.get_short_help_str(60)) for n, c in self.commands.items() if n not in LAZY_COMMANDS]
        with formatter.section("Commands"):
            formatter.write_dl(sorted(rows))


def build_cli() -> click.Group:
    @click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
    @click.version_option(package_name="driftar", prog_name="driftar")
    def cli() -> None:
        """driftar: fast autoregressive image generation with continuous tokens (Drift-AR).

        \b
        Quick start (bundled digits data, CPU):
          driftar train --backbone mar          # train, then sample grids under runs/
          driftar sample --checkpoint runs/mar/<run> -n 64 --out grid.png
        """

    add_plugin_commands(cli)
    return cli


def add_plugin_commands(cli: click.Group) -> None:
    """Each plugin's ``driftar_register_commands`` in turn: one that raises is isolated (``driftar
    plugins`` shows it failed); one that shadows a core command is allowed, with a warning naming it."""
    from driftar_core.plugins import get_plugin_manager
    pm = get_plugin_manager()
    for src, function in pm.active_impls("driftar_register_commands"):
        before = dict(cli.commands)
        try:
            function(cli=cli)
        except Exception as e:
            cli.commands.clear()
            cli.commands.update(before)
            pm.isolate(src, "raised in driftar_register_commands", e)
            pm.reset_registries()
            continue
        for name, cmd in cli.commands.items():
            if before.get(name, cmd) is not cmd or (name in LAZY_COMMANDS and name not in before):
                click.echo(f"driftar: plugin {src!r} replaces the command {name!r}", err=True)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI. Expected failures (bad input, damaged files, a busy run, an unwritable path) end as
    one ``Error: ...`` line and exit code 2; only a bug in driftar or a plugin shows a traceback."""
    cli = build_cli()
    try:
        cli.main(args=argv, prog_name="driftar", standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("Aborted!", err=True)
        sys.exit(1)
    except Exception as e:
        if not isinstance(e, expected_errors()):
            raise
        click.echo(f"Error: {e}", err=True)
        sys.exit(2)



def expected_errors() -> tuple[type[BaseException], ...]:
    """Errors that are the user's input or machine, not driftar's bug: their message says what to do."""
    from driftar_core.config import ConfigError
    from driftar_core.errors import CheckpointError, NonFiniteError
    from driftar_core.files import IntegrityError, LockedError
    from driftar_core.registry import DuplicateNameError, UnknownNameError
    return (ConfigError, UnknownNameError, DuplicateNameError, CheckpointError, NonFiniteError, IntegrityError,
            LockedError, OSError,   # OSError: missing / unwritable / not-a-directory paths, a full disk
            FloatingPointError)     # a diverged training loss (the message names the last good checkpoint)
