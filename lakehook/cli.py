"""The ``lakehook`` command line (contract §2).

Exit codes: 0 success; 1 the operation failed (stderr says what and what to do); 2 bad usage.
Each command is a thin shell over a module that does the work; imports are lazy so that
``lakehook --help`` is instant and one broken optional dependency never hides the others.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click

from lakehook.errors import LakehookError
from lakehook.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])


def fails_cleanly(func: F) -> F:
    """Turn a ``LakehookError`` into a one-line message on stderr and exit code 1."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except LakehookError as err:
            click.echo(f"lakehook: {err}", err=True)
            sys.exit(1)

    return wrapper  # type: ignore[return-value]


pass_settings = click.make_pass_decorator(Settings)


@click.group()
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    envvar="LAKEHOOK_CONFIG",
    help="YAML file of settings (environment variables LAKEHOOK_* win).",
)
@click.version_option(package_name="lakehook")
@click.pass_context
def main(ctx: click.Context, config_file: str | None) -> None:
    """lakehook: typed tables, metastore schemas and lineage for every lakeFS branch."""
    try:
        ctx.obj = Settings.load(config_file=config_file)
    except LakehookError as err:
        click.echo(f"lakehook: {err}", err=True)
        sys.exit(1)


def _register_optional(name: str) -> None:
    """Attach the commands a module contributes; a missing module is not fatal at import."""
    import importlib

    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name is not None and name.startswith(err.name):
            return
        raise
    module.register(main)


for _module in (
    "lakehook.stack.commands",
    "server.commands",
    "lakehook.demo",
    "pipeline.lineage.commands",
):
    _register_optional(_module)
