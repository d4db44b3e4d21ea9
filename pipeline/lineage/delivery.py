"""Getting lineage events out: always to the journal, then to Marquez when configured.

``JournalSink.emit`` (the ``LineageSink`` of production) only appends to the fsync'd journal,
so processing never waits for Marquez, whatever process it runs in. The ``Deliverer`` (owned
by ``lakehook serve``'s intake process, see ``server/lineage.py``) watches the journal and
POSTs each event, in order, with openlineage-python's ``HttpTransport`` (its urllib3 retry
config retries refused connections and 5xx/408/429 answers with backoff); the persisted cursor
moves past an event only after a 2xx. Marquez down: the pass stops at that event and the next
pass, after a backoff, resumes there; nothing is lost and the order is kept. A 4xx other than
408/425/429 means the backend refuses that event for good: it moves to ``rejected.jsonl``
beside the journal and delivery goes on. Why the journal and not the client's own file and
composite transports: docs/lineage.md.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlparse

import requests
import urllib3
from openlineage.client.serde import Serde
from openlineage.client.transport.http import HttpConfig, HttpTransport

from lakehook.errors import ConfigError, ServiceUnavailable
from lakehook.settings import Settings
from pipeline.lineage.journal import Journal

log = logging.getLogger(__name__)

LINEAGE_ENDPOINT = "api/v1/lineage"
DEFAULT_TIMEOUT = 10.0  # the first POST to a cold Marquez took over 5 s here
RETRYABLE_CLIENT_STATUSES = frozenset({408, 425, 429})


class Rejected(Exception):
    """The backend answered that this event will never be accepted (a 4xx)."""


class Uncertain(ServiceUnavailable):
    """The request went out but no answer came back: the backend may or may not have it."""


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
    """POSTs one serialized OpenLineage event with the client's ``HttpTransport``.

    Args:
        base_url: e.g. ``http://127.0.0.1:5000``.
        timeout: seconds for connecting and for the answer; bounds every request.
        attempts: tries of one request (the transport's urllib3 retry, with backoff).
    """

    def __init__(self, base_url: str, timeout: float = DEFAULT_TIMEOUT, attempts: int = 3) -> None:
        parsed = urlparse(base_url)
        if parsed.scheme not in {"http", "https"} or not parsed.netloc:
            raise ConfigError(
                f"LAKEHOOK_MARQUEZ_URL={base_url!r} is not an http(s) URL, "
                "e.g. http://127.0.0.1:5000"
            )
        self.base_url = base_url.rstrip("/")
        self.url = f"{self.base_url}/{LINEAGE_ENDPOINT}"
        self.timeout = timeout
        retries = max(0, attempts - 1)
        self.transport = HttpTransport(
            HttpConfig(
                url=self.base_url,
                endpoint=LINEAGE_ENDPOINT,
                timeout=timeout,
                retry={
                    "total": retries,
                    "connect": retries,
                    "read": 0,  # a read timeout may mean Marquez has it: the pass decides
                    "backoff_factor": 0.2,
                    "status_forcelist": [500, 502, 503, 504, *RETRYABLE_CLIENT_STATUSES],
                    "allowed_methods": ["POST"],
                },
            )
        )

    def post(self, body: str) -> int:
        """Send one event (a journal line).

        Returns:
            The 2xx status.

        Raises:
            ServiceUnavailable: no answer, a timeout, a 5xx, 408 or 429: try again later.
            Rejected: any other non-2xx answer.
        """
        event: Any = json.loads(body)  # the transport serialises it again, byte for byte alike
        try:
            return int(self.transport.emit(event).status_code)
        except requests.HTTPError as err:
            status = err.response.status_code if err.response is not None else 0
            detail = err.response.text[:500] if err.response is not None else str(err)
            if status >= 500 or status in RETRYABLE_CLIENT_STATUSES:
                raise ServiceUnavailable(
                    f"Marquez at {self.base_url} answered {status}: {detail}"
                ) from None
            raise Rejected(f"Marquez answered {status}: {detail}") from None
        except requests.RequestException as err:
            message = f"Marquez at {self.base_url} did not answer: {_reason(err)}"
            if _maybe_received(err):
                raise Uncertain(message) from None
            raise ServiceUnavailable(message) from None

    def has(self, body: str) -> bool:
        """Whether Marquez already holds this event (same run, type and time).

        Asked only when an earlier send's outcome is unknown (no answer after sending, or a
        process stopped between a 2xx and the cursor write), so that a re-send never gives
        Marquez the same event twice. False when Marquez cannot tell (the event is sent).
        """
        event = json.loads(body)
        try:
            at = datetime.fromisoformat(event["eventTime"])
            window = {
                "after": (at - timedelta(seconds=1)).isoformat(),
                "before": (at + timedelta(seconds=1)).isoformat(),
                "limit": "1000",
            }
            answer = self.transport.session.get(
                f"{self.base_url}/api/v1/events/lineage", params=window, timeout=self.timeout
            )
            answer.raise_for_status()
            known = answer.json().get("events", [])
        except (requests.RequestException, ValueError, KeyError, TypeError, AttributeError):
            return False
        return any(
            e.get("run", {}).get("runId") == event["run"]["runId"]
            and e.get("eventType") == event["eventType"]
            for e in known
        )

    def close(self) -> None:
        self.transport.close()


def _maybe_received(err: requests.RequestException) -> bool:
    """Whether the request went out before the failure (a read timeout or a dropped answer)."""
    if isinstance(err, requests.ReadTimeout | requests.exceptions.ChunkedEncodingError):
        return True
    reason = err.args[0] if err.args else None
    if isinstance(reason, urllib3.exceptions.MaxRetryError):
        reason = reason.reason
    return isinstance(
        reason, urllib3.exceptions.ReadTimeoutError | urllib3.exceptions.ProtocolError
    )


def _reason(err: requests.RequestException) -> str:
    """The innermost cause of a requests error, short (no URL repeated thrice)."""
    cause: BaseException = err
    while cause.__context__ is not None and cause.__context__ is not cause:
        cause = cause.__context__
    return f"{type(cause).__name__}: {cause}"[:300]


class Deliverer:
    """Sends the journal's pending events to Marquez, in order, each once per 2xx.

    One pass (``resend_pending``) runs at a time across processes (a file lock), so the
    server's thread and ``lakehook lineage flush`` never send the same event concurrently. The
    thread notices events appended by any process: it polls the journal's size.

    Args:
        journal: the journal to read and whose cursor to advance.
        endpoint: where to POST.
        poll_interval: seconds between looks at the journal for new events.
        max_backoff: longest pause between passes while Marquez does not answer.

    Attributes:
        delivered_total: events accepted since this object was made.
        rejected_total: events refused for good (4xx) since then.
        failed_passes: passes stopped because Marquez did not answer.
    """

    def __init__(
        self,
        journal: Journal,
        endpoint: MarquezEndpoint,
        *,
        poll_interval: float = 0.5,
        max_backoff: float = 10.0,
    ) -> None:
        self.journal = journal
        self.endpoint = endpoint
        self.poll_interval = poll_interval
        self.max_backoff = max_backoff
        self.delivered_total = 0
        self.rejected_total = 0
        self.failed_passes = 0
        self.last_error: str | None = None
        # the first pending event may already be in Marquez (a crash after its 2xx, before the
        # cursor moved; or a send without answer): ask before sending it
        self._verify_first = True
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- one pass -----------------------------------------------------------------------------
    def resend_pending(self, max_seconds: float = 60.0) -> DeliveryReport:
        """Deliver the pending events now, in order; stop at the first one Marquez does not take.

        Args:
            max_seconds: no new event is started after this many seconds (bounds the pass).

        Returns:
            What was delivered and what remains; ``error`` says why the pass stopped early.
        """
        delivered = rejected = 0
        error: str | None = None
        deadline = time.monotonic() + max_seconds
        with self.journal.delivery_lock():
            for entry in self.journal.entries(self.journal.delivered_offset()):
                if time.monotonic() > deadline:
                    error = f"pass stopped after {max_seconds:.0f} s"
                    break
                outcome = self._deliver(entry.text)
                if outcome is None:
                    error = self.last_error
                    break
                self.journal.set_delivered_offset(entry.end)
                # counted once the cursor moved, so the metrics never run ahead of the journal
                if outcome == "delivered":
                    delivered += 1
                    self.delivered_total += 1
                elif outcome == "rejected":
                    rejected += 1
                    self.rejected_total += 1
            remaining = self.journal.state().pending
        if error is not None:
            self.failed_passes += 1
        self.last_error = error
        return DeliveryReport(delivered, rejected, remaining, error)

    def _deliver(self, text: str) -> str | None:
        """Send one journal line: "delivered", "rejected", "skipped" (blank), or None when
        Marquez did not take it (``last_error`` says why)."""
        if not text:
            return "skipped"
        if not _is_json(text):
            self.journal.reject(text, "not a JSON document")
            return "rejected"
        try:
            if not (self._verify_first and self.endpoint.has(text)):
                self.endpoint.post(text)
        except ServiceUnavailable as err:
            self._verify_first = self._verify_first or isinstance(err, Uncertain)
            self.last_error = err.message
            return None
        except Rejected as err:
            self._verify_first = False
            log.error("lineage event refused, kept in %s: %s", self.journal.rejected_path, err)
            self.journal.reject(text, str(err))
            return "rejected"
        self._verify_first = False
        return "delivered"

    def pending(self) -> int:
        """Events in the journal after the cursor."""
        return self.journal.state().pending

    def _has_pending(self) -> bool:
        return self.journal.size() > self.journal.delivered_offset()

    # ---- the background thread ----------------------------------------------------------------
    def wake(self) -> None:
        """Ask for a pass now (the thread also finds new events by itself)."""
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
        """Stop the thread after its current event (bounded by the HTTP timeout and retries)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self.endpoint.close()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _loop(self) -> None:
        failures = 0
        while not self._stop.is_set():
            woken = self._wake.wait(self.poll_interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            if not (woken or self._has_pending()):
                continue
            try:
                report = self.resend_pending(max_seconds=60.0)
            except Exception:  # the thread must survive anything; the journal keeps the events
                log.exception("lineage delivery pass failed")
                report = DeliveryReport(0, 0, -1, "delivery pass failed")
            if report.error is None:
                failures = 0
                continue
            failures += 1
            delay = min(self.max_backoff, 0.5 * 2.0 ** min(failures, 16))
            log.warning(
                "lineage: %s; %s event(s) pending, next try in %.1f s",
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
    """The ``LineageSink`` of ``settings``: the journal only.

    Delivery is the server's (``server/lineage.py``): it reads the journal whatever process
    wrote to it, so workers in other processes need no deliverer of their own.
    """
    return JournalSink(Journal(settings.lineage_journal))


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
