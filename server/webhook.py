"""``POST /webhooks/lakefs``: lakeFS's webhooks, a WSGI application on CherryPy's tree.

It checks the token in constant time (401), the content type (415), the size (413) and the
payload (400, with the reason); a post-event becomes a durable job and is answered ``202`` with
its id; ``pre-merge`` is answered by the gate from recorded state and manifests (200 or 412 with
the reason) within ``gate_timeout_seconds``, or refused at once with 503 "cannot decide now,
retry the merge". Nothing it is sent can make it fail: a fault of its own is a JSON 500.

Why WSGI and not a CherryPy handler: a webhook is the intake's hottest path (lakeFS blocks on
nothing but pre-merge, yet every post-event holds one of its hook workers until answered), and
CherryPy's per-request machinery (the request and response objects, config lookups, dispatch,
tools and hook maps) was the larger part of its cost. ``cherrypy.tree.graft`` is CherryPy's own
way to serve a WSGI application beside its apps: the same server (cheroot), thread pool, limits
and engine; only the webhook skips the framework. Measured in docs/benchmarks.md (issue 16).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, TypeVar

from cheroot.errors import MaxSizeExceeded

from lakehook.errors import InvalidEvent, LakehookError
from pipeline.provenance import Provenance
from server import auth
from server import events as ev
from server.worker import mark

if TYPE_CHECKING:
    from server.app import Context

log = logging.getLogger("lakehook.server")
access_log = logging.getLogger("lakehook.access")
T = TypeVar("T")
PATH = "/lakefs"  # under the graft's "/webhooks"

Answer = tuple[int, dict[str, Any]]
StartResponse = Callable[..., Any]


def within(budget: float, slots: threading.BoundedSemaphore, call: Callable[[], T]) -> T:
    """``call()`` on a daemon thread, or ``FutureTimeout`` once ``budget`` seconds have passed
    (at once when every slot is taken by calls still under way). The call's own exception is
    raised here; a call past the budget finishes in the background and is forgotten."""
    if not slots.acquire(blocking=False):
        raise FutureTimeout
    future: Future[T] = Future()

    def run() -> None:
        try:
            future.set_result(call())
        except BaseException as err:  # handed to the waiting request thread
            future.set_exception(err)
        finally:
            slots.release()

    threading.Thread(target=run, name="lakehook-gate", daemon=True).start()
    return future.result(timeout=budget)


class _Sent:
    """The response body; its ``close()``, which the server calls once the response is sent,
    records the request's time (``lakehook_http_request_seconds``)."""

    def __init__(self, body: bytes, done: Callable[[], None]) -> None:
        self.body, self.done = body, done

    def __iter__(self) -> Iterator[bytes]:
        yield self.body

    def close(self) -> None:
        self.done()


class WebhookApp:
    """The WSGI application grafted at ``/webhooks``."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.provenance = ctx.provenance or Provenance.from_settings(ctx.settings, ctx.store)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        started = time.perf_counter()
        route = ["webhook"]
        extra_headers: list[tuple[str, str]] = []
        try:
            status, body = self._answer(environ, route, extra_headers)
        except Exception:  # never a crash, never a traceback to the client
            log.exception("the webhook handler failed")
            status, body = 500, {"error": "internal error: see the server's log"}
            extra_headers = []
        data = json.dumps(body).encode()
        phrase = HTTPStatus(status).phrase
        headers = [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(data))),
            *extra_headers,
        ]
        start_response(f"{status} {phrase}", headers)
        if access_log.isEnabledFor(logging.INFO):
            access_log.info(
                '%s "%s %s%s %s" %d %d',
                environ.get("REMOTE_ADDR", "-"),
                environ.get("REQUEST_METHOD", ""),
                environ.get("SCRIPT_NAME", ""),
                environ.get("PATH_INFO", ""),
                environ.get("SERVER_PROTOCOL", ""),
                status,
                len(data),
            )
        observe = self.ctx.metrics.requests.labels(route[0]).observe
        return _Sent(data, lambda: observe(time.perf_counter() - started))

    def _answer(
        self, environ: dict[str, Any], route: list[str], extra_headers: list[tuple[str, str]]
    ) -> Answer:
        if environ.get("PATH_INFO", "") != PATH:
            return 404, {"error": "unknown path: webhooks are POSTed to /webhooks/lakefs"}
        method = environ.get("REQUEST_METHOD", "")
        if method != "POST":
            extra_headers.append(("Allow", "POST"))
            return 405, {"error": "use POST"}
        headers = {
            auth.TOKEN_HEADER: environ.get("HTTP_X_LAKEHOOK_TOKEN", ""),
            "Authorization": environ.get("HTTP_AUTHORIZATION", ""),
            "Content-Type": environ.get("CONTENT_TYPE", ""),
        }
        refused = auth.problem(headers, method, self.ctx.settings.webhook_token)
        if refused is not None:
            status, message = refused
            outcome = "unauthorized" if status == 401 else "invalid"
            self.ctx.metrics.events.labels("unknown", outcome).inc()
            return status, {"error": message}
        try:
            body = environ["wsgi.input"].read()
        except (OSError, ValueError, MaxSizeExceeded) as err:
            # cheroot: a chunked body past the limit (OSError, or MaxSizeExceeded for an
            # endless chunk-size line), broken chunked coding (ValueError), a client gone
            self.ctx.metrics.events.labels("unknown", "invalid").inc()
            if isinstance(err, MaxSizeExceeded) or "Too Large" in str(err):
                limit = self.ctx.settings.max_body_bytes
                return 413, {"error": f"the body is larger than {limit} bytes"}
            return 400, {"error": f"the body could not be read: {str(err)[:200]}"}
        if len(body) > self.ctx.settings.max_body_bytes:  # a server without the limit set
            self.ctx.metrics.events.labels("unknown", "invalid").inc()
            return 413, {
                "error": f"the body is larger than {self.ctx.settings.max_body_bytes} bytes"
            }
        try:
            event = ev.parse_event(json.loads(body or b"null"))
        except (ValueError, UnicodeDecodeError) as err:
            self.ctx.metrics.events.labels("unknown", "invalid").inc()
            return 400, {"error": f"body is not JSON: {err}"}
        except RecursionError:
            self.ctx.metrics.events.labels("unknown", "invalid").inc()
            return 400, {"error": "body is not JSON lakeFS sends: nested too deeply"}
        except InvalidEvent as err:
            self.ctx.metrics.events.labels("unknown", "invalid").inc()
            return 400, {"error": str(err)}
        extra = {
            "repository": event.repository,
            "ref": event.ref,
            "event": event.event_type,
            "commit": event.commit_id,
        }
        if event.event_type == ev.PRE_MERGE:
            route[0] = "gate"
            return self._gate(event, extra)
        return self._queue(event, extra)

    def _queue(self, event: ev.Event, extra: dict[str, Any]) -> Answer:
        reason = ev.ignored_because(event, self.provenance)
        if reason is not None:
            self.ctx.metrics.events.labels(event.event_type, "ignored").inc()
            log.info("event ignored: %s", reason, extra=extra)
            return 200, {"ignored": reason}
        kind = ev.JOB_KINDS[event.event_type]
        args = {"source_ref": event.source_ref} if kind == "create_branch" else {}
        job_id, coalesced = self.ctx.queue.enqueue(
            event.repository, event.ref_type, event.ref, kind, args, event=event.event_type
        )
        if not kind.startswith("delete"):
            job = self.ctx.queue.get(job_id)
            if job is not None:
                mark(self.ctx.store, job, "pending", f"job {job_id} queued ({event.event_type})")
        self.ctx.wake()
        self.ctx.metrics.events.labels(event.event_type, "queued").inc()
        log.info("event queued", extra={**extra, "job_id": job_id})
        return 202, {"job_id": job_id, "coalesced": coalesced}

    def _gate(self, event: ev.Event, extra: dict[str, Any]) -> Answer:
        source = event.merge_source or event.source_ref
        budget = self.ctx.settings.gate_timeout_seconds
        decide = self.ctx.gate or self.ctx.processor.gate
        try:
            decision = within(
                budget,
                self.ctx.gate_slots,
                lambda: decide(event.repository, source, event.branch, event.source_ref or None),
            )
        except FutureTimeout:
            self.ctx.metrics.gate.labels("timeout").inc()
            log.warning("gate could not decide within %.1f s", budget, extra=extra)
            return 503, {
                "allowed": False,
                "reasons": [
                    f"lakehook cannot decide now (no answer within {budget:g} s); retry the merge"
                ],
            }
        except LakehookError as err:
            self.ctx.metrics.gate.labels("error").inc()
            log.warning("gate could not decide: %s", err, extra=extra)
            return 503, {
                "allowed": False,
                "reasons": [f"lakehook could not decide ({err}); retry the merge shortly"],
            }
        self.ctx.metrics.gate.labels(str(decision.allowed).lower()).inc()
        self.ctx.metrics.events.labels(event.event_type, "answered").inc()
        log.info("gate: %s", "allowed" if decision.allowed else "refused", extra=extra)
        body = {"allowed": decision.allowed, "reasons": list(decision.reasons)}
        return (200 if decision.allowed else 412), body
