"""Getting lineage events out: always to the journal, then to Marquez when configured.

``JournalSink.emit`` (the ``LineageSink`` of production) only appends to the fsync'd journal
and wakes the ``Deliverer``, so processing never waits for Marquez. The deliverer's thread
reads the journal from the persisted cursor and POSTs each event, in order, to
``<marquez>/api/v1/lineage``; the cursor moves past an event only after a 2xx. Marquez down or
slow: the pass stops at that event and is retried later with backoff; nothing is lost and the
order is kept. A crash between a 2xx and the cursor write re-sends that one event: the same
event with the same run id, which Marquez applies as an update of the same run (at least once,
never a new run). A 4xx other than 408/429 means the backend refuses that event for good: it
moves to ``rejected.jsonl`` beside the journal and delivery goes on.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from urllib.parse import urlparse

from openlineage.client.serde import Serde
from tenacity import (
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
)

from lakehook.errors import ConfigError, ServiceUnavailable
from lakehook.settings import Settings
from pipeline.lineage.journal import Journal

log = logging.getLogger(__name__)

LINEAGE_ENDPOINT = "/api/v1/lineage"
DEFAULT_TIMEOUT = 5.0
RETRYABLE_CLIENT_STATUSES = frozenset({408, 425, 429})


class Rejected(Exception):
    """The backend answered that this event will never be accepted (a 4xx)."""


@dataclass(frozen=True)
class DeliveryReport:
    """The outcome of one delivery pass.

    Attributes:
        delivered: events accepted by the backend in this pass.
        rejected: events refused for good (kept in ``rejected.jsonl``).
        remaining: events still pending after the pass.
        error: why the pass stopped early (the backend did not answer), or None.
    """

    delivered: int
    rejected: int
    remaining: int
    error: str | None = None


class MarquezEndpoint:
    """POSTs one serialized OpenLineage event to an OpenLineage HTTP endpoint (Marquez).

    Args:
        base_url: e.g. ``http://127.0.0.1:5000``.
        timeout: seconds for connecting and for the answer; bounds every request.
    """

    def __init__(self, base_url: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        parsed = urlparse(base_url)
        if parsed.scheme not in {"http", "https"} or not parsed.netloc:
            raise ConfigError(
                f"LAKEHOOK_MARQUEZ_URL={base_url!r} is not an http(s) URL, "
                "e.g. http://127.0.0.1:5000"
            )
        self.base_url = base_url.rstrip("/")
        self.url = self.base_url + LINEAGE_ENDPOINT
        self.timeout = timeout

    def post(self, body: str) -> int:
        """Send one event.

        Returns:
            The 2xx status.

        Raises:
            ServiceUnavailable: no answer, a timeout, a 5xx, 408 or 429: try again later.
            Rejected: any other non-2xx answer.
        """
        request = urllib.request.Request(  # noqa: S310 - URL scheme checked in __init__
            self.url,
            data=body.encode("utf-8"),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                return int(response.status)
        except urllib.error.HTTPError as err:
            detail = err.read(500).decode("utf-8", errors="replace")
            if err.code >= 500 or err.code in RETRYABLE_CLIENT_STATUSES:
                raise ServiceUnavailable(
                    f"Marquez at {self.base_url} answered {err.code}: {detail}"
                ) from None
            raise Rejected(f"Marquez answered {err.code}: {detail}") from None
        except (OSError, urllib.error.URLError) as err:
            reason = getattr(err, "reason", err)
            raise ServiceUnavailable(
                f"Marquez at {self.base_url} did not answer: {reason}"
            ) from None


class Deliverer:
    """Sends the journal's pending events to Marquez, in order, each at least once.

    One pass (``resend_pending``) runs at a time across processes (a file lock), so the
    server's thread and ``lakehook lineage flush`` never send the same event concurrently.

    Args:
        journal: the journal to read and whose cursor to advance.
        endpoint: where to POST.
        idle_interval: seconds between passes when nothing wakes the thread (a sweep).
        max_backoff: longest pause between passes while Marquez does not answer.
        attempts: tries per event within one pass before the pass gives up.
    """

    def __init__(
        self,
        journal: Journal,
        endpoint: MarquezEndpoint,
        *,
        idle_interval: float = 30.0,
        max_backoff: float = 60.0,
        attempts: int = 3,
    ) -> None:
        self.journal = journal
        self.endpoint = endpoint
        self.idle_interval = idle_interval
        self.max_backoff = max_backoff
        self.attempts = attempts
        self.delivered_total = 0
        self.rejected_total = 0
        self.last_error: str | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- one pass -----------------------------------------------------------------------------
    def resend_pending(self, max_seconds: float = 60.0) -> DeliveryReport:
        """Deliver every pending event now, in order; stop at the first one that fails.

        Args:
            max_seconds: bound on the retries of one event within this pass.

        Returns:
            What was delivered and what remains; ``error`` says why the pass stopped early.
        """
        delivered = rejected = 0
        error: str | None = None
        with self.journal.delivery_lock():
            for entry in self.journal.entries(self.journal.delivered_offset()):
                if entry.text and not _is_json(entry.text):
                    self.journal.reject(entry.text, "not a JSON document")
                    rejected += 1
                elif entry.text:
                    try:
                        self._post_with_retries(entry.text, max_seconds)
                    except ServiceUnavailable as err:
                        error = err.message
                        break
                    except Rejected as err:
                        log.error(
                            "lineage event refused, kept in %s: %s", self.journal.rejected_path, err
                        )
                        self.journal.reject(entry.text, str(err))
                        rejected += 1
                    else:
                        delivered += 1
                self.journal.set_delivered_offset(entry.end)
            remaining = self.journal.state().pending
        self.delivered_total += delivered
        self.rejected_total += rejected
        self.last_error = error
        return DeliveryReport(delivered, rejected, remaining, error)

    def _post_with_retries(self, body: str, max_seconds: float) -> None:
        retrying = Retrying(
            stop=stop_after_attempt(self.attempts) | stop_after_delay(max_seconds),
            wait=wait_exponential(multiplier=0.2, max=2.0),
            retry=retry_if_exception_type(ServiceUnavailable),
            reraise=True,
        )
        for attempt in retrying:
            with attempt:
                self.endpoint.post(body)

    # ---- the background thread ----------------------------------------------------------------
    def wake(self) -> None:
        """Ask for a pass soon (called after each append); ignored while backing off."""
        self._wake.set()

    def start(self) -> None:
        """Start the background thread; its first pass sends what earlier runs left pending."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._wake.set()
        self._thread = threading.Thread(
            target=self._loop, name="lakehook-lineage-deliverer", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the thread after its current pass (bounded by the HTTP timeout and retries)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _loop(self) -> None:
        failures = 0
        while not self._stop.is_set():
            if self._wake.wait(self.idle_interval if failures == 0 else 0):
                self._wake.clear()
            if self._stop.is_set():
                return
            try:
                report = self.resend_pending(max_seconds=self.endpoint.timeout * 2)
            except Exception:  # the thread must survive anything; the journal keeps the events
                log.exception("lineage delivery pass failed")
                report = DeliveryReport(0, 0, -1, "delivery pass failed")
            if report.error is None:
                failures = 0
                continue
            failures += 1
            delay = min(self.max_backoff, 2.0 ** min(failures, 16))
            log.warning(
                "lineage: %s; %s event(s) pending, next try in %.0f s",
                report.error,
                report.remaining,
                delay,
            )
            self._stop.wait(delay)


class JournalSink:
    """The production ``LineageSink``: append to the journal, wake the deliverer.

    Args:
        journal: the journal file.
        deliverer: the Marquez deliverer, or None when no Marquez is configured.
    """

    def __init__(self, journal: Journal, deliverer: Deliverer | None = None) -> None:
        self.journal = journal
        self.deliverer = deliverer

    def emit(self, event: object) -> None:
        """Journal one event (fsync'd) and return; delivery to Marquez happens in background.

        Raises:
            OSError: the journal cannot be written (the recorder logs and counts it).
        """
        self.journal.append(Serde.to_json(event))
        if self.deliverer is not None:
            self.deliverer.wake()

    def start(self) -> None:
        """Start background delivery (no-op without Marquez)."""
        if self.deliverer is not None:
            self.deliverer.start()

    def stop(self) -> None:
        """Stop background delivery (no-op without Marquez); pending events stay journaled."""
        if self.deliverer is not None:
            self.deliverer.stop()


def build_deliverer(settings: Settings, timeout: float = DEFAULT_TIMEOUT) -> Deliverer | None:
    """The deliverer of ``settings.lineage_journal`` to ``settings.marquez_url`` (None: no URL)."""
    if not settings.marquez_url:
        return None
    return Deliverer(
        Journal(settings.lineage_journal), MarquezEndpoint(settings.marquez_url, timeout)
    )


def build_sink(settings: Settings) -> JournalSink:
    """The ``LineageSink`` of ``settings``: the journal, plus a (not started) deliverer."""
    return JournalSink(Journal(settings.lineage_journal), build_deliverer(settings))


def resend_pending(settings: Settings, max_seconds: float = 60.0) -> DeliveryReport:
    """Deliver the pending journal events of ``settings`` now (``lakehook lineage flush``).

    Raises:
        ConfigError: no Marquez is configured.
    """
    deliverer = build_deliverer(settings)
    if deliverer is None:
        raise ConfigError(
            "no Marquez configured: set LAKEHOOK_MARQUEZ_URL, e.g. http://127.0.0.1:5000"
        )
    return deliverer.resend_pending(max_seconds=max_seconds)


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def wait_until_delivered(deliverer: Deliverer, deadline_seconds: float) -> bool:
    """Poll until the journal has nothing pending or the deadline passes (tests, shutdown)."""
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        if deliverer.journal.state().pending == 0:
            return True
        time.sleep(0.05)
    return deliverer.journal.state().pending == 0
