"""``lakehook lineage flush`` and ``lakehook lineage status``."""

from __future__ import annotations

import json
import sys

import click

from lakehook.cli import fails_cleanly, pass_settings
from lakehook.errors import ServiceUnavailable
from lakehook.settings import Settings


def register(main: click.Group) -> None:
    """Attach the ``lineage`` command group to the ``lakehook`` CLI."""
    main.add_command(lineage)


@click.group()
def lineage() -> None:
    """The lineage journal and its delivery to Marquez."""


@lineage.command()
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=60.0,
    show_default=True,
    help="Seconds to keep retrying an event before giving up.",
)
@pass_settings
@fails_cleanly
def flush(settings: Settings, timeout: float) -> None:
    """Deliver the pending journal events to Marquez now (exit 1 if Marquez does not answer)."""
    from pipeline.lineage.delivery import resend_pending

    report = resend_pending(settings, max_seconds=timeout)
    click.echo(
        f"delivered {report.delivered} event(s), rejected {report.rejected}, "
        f"{report.remaining} pending"
    )
    if report.error is not None:
        raise ServiceUnavailable(
            f"{report.error}; {report.remaining} event(s) remain in {settings.lineage_journal} "
            "and are sent when Marquez answers (run `lakehook lineage flush` again, or leave "
            "it to `lakehook serve`)"
        )


@lineage.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_settings
@fails_cleanly
def status(settings: Settings, as_json: bool) -> None:
    """Journal size, delivered offset and pending events."""
    from pipeline.lineage.journal import Journal

    state = Journal(settings.lineage_journal).state()
    data = {
        "journal": str(state.path),
        "size": state.size,
        "delivered_offset": state.delivered,
        "pending": state.pending,
        "marquez_url": settings.marquez_url or None,
    }
    if as_json:
        json.dump(data, sys.stdout, indent=1)
        click.echo()
        return
    click.echo(f"journal:          {state.path} ({state.size} bytes)")
    click.echo(f"delivered offset: {state.delivered}")
    click.echo(f"pending events:   {state.pending}")
    click.echo(f"marquez:          {settings.marquez_url or '(not configured)'}")
