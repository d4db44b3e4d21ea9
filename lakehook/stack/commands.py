"""``lakehook stack up | down | status | env``."""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path

import click

from lakehook.errors import LakehookError
from lakehook.settings import Settings
from lakehook.stack import paths, process
from lakehook.stack.components import MARQUEZ_URL, MARQUEZ_WEB_URL, Component, core_components


def _fail(err: LakehookError) -> None:
    click.echo(f"lakehook stack: {err}", err=True)
    raise SystemExit(1)


def stack_up(settings: Settings, clean: bool = False, echo: bool = True) -> None:
    """Install what is missing and start every component; returns once all answer."""
    settings.signing_secret()  # made once in the state dir (0600); the server reads it there
    components = core_components(settings)
    if clean:
        for component in reversed(components):
            component.stop()
        shutil.rmtree(paths.stack_dir() / "data", ignore_errors=True)
        shutil.rmtree(paths.stack_dir() / "etc", ignore_errors=True)
    begin = time.monotonic()
    for component in components:
        t0 = time.monotonic()
        component.install()
        installed = time.monotonic() - t0
        what, waited = component.start()
        if echo:
            click.echo(
                f"{component.name:<15} installed ({installed:.1f}s), {what}, ready after "
                f"{waited:.1f}s (port {component.port}, pid {component.pid()})"
            )
    if echo:
        click.echo(
            f"stack ready in {time.monotonic() - begin:.1f}s; `lakehook stack env` prints the exports"
        )


def stack_settings(settings: Settings) -> Settings:
    """``settings`` with the stack's own Marquez endpoints where none are configured.

    The settings default stays empty (no Marquez) for a server outside the stack; the local
    stack runs Marquez, so its environment names it.
    """
    return dataclasses.replace(
        settings,
        marquez_url=settings.marquez_url or MARQUEZ_URL,
        marquez_web_url=settings.marquez_web_url or MARQUEZ_WEB_URL,
    )


def stack_down(settings: Settings) -> list[str]:
    return [c.name for c in reversed(core_components(settings)) if c.stop()]


ALIASES = {"hms": "hive-metastore", "metastore": "hive-metastore"}


def component_named(settings: Settings, name: str) -> Component:
    """The stack component called ``name`` (or an alias: ``hms``, ``metastore``)."""
    components = {c.name: c for c in core_components(settings)}
    wanted = ALIASES.get(name, name)
    if wanted not in components:
        raise click.BadParameter(
            f"unknown component {name!r}; known: {', '.join(components)}", param_hint="COMPONENT"
        )
    return components[wanted]


def describe(component: Component) -> dict[str, object]:
    pid = component.pid()
    rss, pss = process.memory_kib(pid)
    return {
        "component": component.name,
        "port": component.port,
        "pid": pid,
        "healthy": component.ready(),
        "rss_mib": round(rss / 1024, 1),
        "pss_mib": round(pss / 1024, 1),
        "log": str(paths.log_file(component.name)),
    }


def path_prefix() -> str:
    """Directories for PATH: the ``lakehook`` of this environment, ``lakectl``, ``trino``."""
    import shlex
    import sys

    dirs = [Path(sys.executable).parent, paths.lakectl_binary().parent, paths.bin_dir()]
    return ":".join(shlex.quote(str(d)) for d in dict.fromkeys(dirs))


def register(main: click.Group) -> None:
    @main.group()
    def stack() -> None:
        """The local stack (lakeFS, Hive Metastore, Trino, PostgreSQL, Marquez) without Docker."""

    @stack.command()
    @click.option("--clean", is_flag=True, help="Start from empty data (stops running components).")
    @click.pass_obj
    def up(settings: Settings, clean: bool) -> None:
        """Install (first run, cached) and start every component; return once all answer."""
        try:
            stack_up(settings, clean)
        except LakehookError as err:
            _fail(err)

    @stack.command()
    @click.pass_obj
    def down(settings: Settings) -> None:
        """Stop the processes the stack started (data is kept)."""
        stopped = stack_down(settings)
        click.echo(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")

    @stack.command("stop")
    @click.argument("component")
    @click.pass_obj
    def stop_one(settings: Settings, component: str) -> None:
        """Stop one component (e.g. to try lakehook through an outage); data is kept."""
        target = component_named(settings, component)
        stopped = target.stop()
        click.echo(f"{target.name}: {'stopped' if stopped else 'was not running'}")

    @stack.command("start")
    @click.argument("component")
    @click.pass_obj
    def start_one(settings: Settings, component: str) -> None:
        """Start one installed component; return once it answers."""
        target = component_named(settings, component)
        try:
            what, waited = target.start()
        except LakehookError as err:
            _fail(err)
        click.echo(f"{target.name}: {what}, ready after {waited:.1f}s (port {target.port})")

    @stack.command()
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
    @click.pass_obj
    def status(settings: Settings, as_json: bool) -> None:
        """Each component: port, pid, health, memory."""
        rows = [describe(c) for c in core_components(settings)]
        if as_json:
            import json

            click.echo(json.dumps(rows, indent=2))
            return
        click.echo(
            f"{'component':<15} {'port':>5} {'pid':>8} {'health':<8} {'rss MiB':>8} {'pss MiB':>8}"
        )
        for r in rows:
            click.echo(
                f"{r['component']:<15} {r['port']:>5} {r['pid'] or '-':>8} "
                f"{'up' if r['healthy'] else 'down':<8} {r['rss_mib']:>8} {r['pss_mib']:>8}"
            )
        rss = sum(float(str(r["rss_mib"])) for r in rows)
        pss = sum(float(str(r["pss_mib"])) for r in rows)
        click.echo(f"{'total':<15} {'':>5} {'':>8} {'':<8} {rss:>8.1f} {pss:>8.1f}")
        if not all(r["healthy"] for r in rows):
            raise SystemExit(1)

    @stack.command()
    @click.pass_obj
    def env(settings: Settings) -> None:
        """Print `export` lines for lakehook, lakectl and the Trino client."""
        try:
            settings.signing_secret()  # exists from now on; never printed
        except LakehookError as err:
            _fail(err)
        for line in stack_settings(settings).export_lines():
            click.echo(line)
        click.echo(f"export PATH={path_prefix()}:$PATH")
