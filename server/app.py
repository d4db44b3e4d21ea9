"""The CherryPy application (contract §2, §8, §9): the intake process of ``lakehook serve``.

``POST /webhooks/lakefs`` is ``server.webhook.WebhookApp``, a WSGI application grafted onto
CherryPy's tree (a post-event becomes a durable job; ``pre-merge`` is answered by the gate).
Status, reconcile, job, health, readiness and metrics endpoints are CherryPy handlers here;
every ``/api/v1`` route needs the token too (``server.auth``), health, readiness and metrics
stay open. Handlers never let an exception escape as a crash:
input problems are 4xx, outages 503.

``serve`` runs this intake in its own process and the jobs in worker processes it supervises
(``server.supervisor``); ``mount(with_workers=True)`` runs them on threads of this process
instead, for tests on fakes.
"""

from __future__ import annotations

import json
import logging
import socket
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import cherrypy

from lakehook.errors import InvalidEvent, LakehookError, NotFound, TransientError
from lakehook.settings import Settings
from pipeline.model import GateDecision
from pipeline.ports import LakeFS, Processor, StatusStore
from pipeline.provenance import Provenance
from server import auth
from server import events as ev
from server.jobs import Queue
from server.metrics import Metrics
from server.state import State
from server.webhook import WebhookApp
from server.worker import Reconciler, ReconcilerPlugin, WorkerPool

log = logging.getLogger("lakehook.server")
TOKEN_HEADER = auth.TOKEN_HEADER
GATE_CONCURRENCY = 4  # gate decisions under way at once; more are refused with 503 at once


@dataclass
class Context:
    """Everything the handlers need, built once at start-up."""

    settings: Settings
    store: StatusStore
    queue: Queue
    processor: Processor
    lakefs: LakeFS
    metrics: Metrics
    reconciler: Reconciler
    wake: Callable[[], None] = lambda: None
    provenance: Provenance | None = None  # None: from settings (key in the state dir)
    workers: Callable[[], list[dict[str, Any]]] = list  # the worker processes, for /healthz
    state: State | None = None  # the state database (None: built around a test's queue)
    # the pre-merge decision (server.gate_process in ``lakehook serve``); None: processor.gate
    gate: Callable[[str, str, str, str | None], GateDecision] | None = None
    gate_pids: Callable[[], list[int]] = list  # the gate processes, for /healthz
    # gate decisions under way: a stuck lakeFS read holds one of these, never a request thread
    gate_slots: threading.BoundedSemaphore = field(
        default_factory=lambda: threading.BoundedSemaphore(GATE_CONCURRENCY)
    )


def _reply(status: int, body: dict[str, Any]) -> dict[str, Any]:
    cherrypy.response.status = status
    return body


class Api:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    @cherrypy.expose
    @cherrypy.tools.json_out()
    def repos(self, repo: str, *rest: str, **params: str) -> Any:
        store = self.ctx.store
        try:  # names lakeFS would refuse never reach it (its 400 was a 500 here)
            ev.check_name("repository_id", repo)
            if params.get("branch"):
                ev.check_name("branch_id", params["branch"])
        except InvalidEvent as err:
            return _reply(400, {"error": str(err).replace("field ", "", 1)})
        if rest == ("status",):
            return [s.to_dict() for s in store.list_statuses(repo)]
        if len(rest) == 3 and rest[0] in ("branches", "tags") and rest[2] == "status":
            ref_type = "branch" if rest[0] == "branches" else "tag"
            status = store.get_status(repo, rest[1], ref_type)
            if status is None:
                return _reply(404, {"error": f"no status for {ref_type} {rest[1]} of {repo}"})
            return status.to_dict()
        if rest == ("reconcile",):
            if cherrypy.request.method != "POST":
                return _reply(405, {"error": "use POST"})
            try:
                jobs = self.ctx.reconciler.sweep(repo, params.get("branch") or None)
            except NotFound as err:
                return _reply(404, {"error": str(err)})
            except TransientError as err:
                return _reply(503, {"error": str(err)})
            except LakehookError as err:  # lakeFS refused the request: the caller's to fix
                return _reply(400, {"error": str(err)})
            return _reply(202, {"jobs": jobs})
        if rest == ("jobs",):
            return [j.to_dict() for j in self.ctx.queue.recent(repo)]
        return _reply(404, {"error": "unknown path"})

    @cherrypy.expose
    @cherrypy.tools.json_out()
    def jobs(self, job_id: str) -> Any:
        # job ids are SQLite integers: a longer number overflowed its 64 bits (a 500)
        valid = job_id.isascii() and job_id.isdigit() and len(job_id) <= 18
        job = self.ctx.queue.get(int(job_id)) if valid else None
        if job is None:
            return _reply(404, {"error": f"no job {job_id[:80]}"})
        return job.to_dict()


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:  # noqa: S310
            return bool(200 <= response.status < 300)
    except OSError:
        return False


def _tcp_ok(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=3):
            return True
    except OSError:
        return False


class Readiness:
    """``/readyz``'s probes of lakeFS, Trino and the metastore, made at most once per
    ``max_age`` seconds however many ask, the three at once (each bounded by its timeout).

    The endpoint is open: probing per request turned every ``/readyz`` into three requests to
    the stack (149 a second from one script here), and with a service blackholed each held an
    HTTP thread for up to three 3 s timeouts, so a few dozen callers held them all. Now a
    caller gets the last answer while a probe is under way; only the very first one waits."""

    def __init__(self, probes: dict[str, Callable[[], bool]], max_age: float = 1.0) -> None:
        self.probes, self.max_age = probes, max_age
        self._lock = threading.Condition()
        self._last: tuple[float, dict[str, bool]] | None = None
        self._probing = False

    def checks(self) -> dict[str, bool]:
        with self._lock:
            last = self._last
            if last is not None and (self._probing or time.monotonic() - last[0] < self.max_age):
                return last[1]
            if self._probing:  # the first probe: wait for it
                self._lock.wait_for(lambda: self._last is not None)
                assert self._last is not None
                return self._last[1]
            self._probing = True
        checks = dict.fromkeys(self.probes, False)  # what stands if the probing itself fails
        try:
            results: dict[str, Future[bool]] = {name: Future() for name in self.probes}
            for name, probe in self.probes.items():
                threading.Thread(
                    target=_settle, args=(results[name], probe), name=f"readyz-{name}", daemon=True
                ).start()
            checks = {name: future.result() for name, future in results.items()}
        finally:
            with self._lock:
                self._probing = False
                self._last = (time.monotonic(), checks)
                self._lock.notify_all()
        return checks


def _settle(future: Future[bool], probe: Callable[[], bool]) -> None:
    try:
        future.set_result(probe())
    except Exception:  # a probe that fails in any way says: not reachable
        future.set_result(False)


class Root:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.started = time.time()
        s = ctx.settings
        self.readiness = Readiness(
            {
                "lakefs": lambda: _http_ok(f"{s.lakefs_url}/api/v1/healthcheck"),
                "trino": lambda: _http_ok(f"{s.trino_url}/v1/info"),
                "metastore": lambda: _tcp_ok(*s.hms_host_port),
            }
        )

    @cherrypy.expose
    @cherrypy.tools.json_out()
    def healthz(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "uptime_seconds": round(time.time() - self.started, 1),
            "workers": self.ctx.workers(),
            "gate_processes": self.ctx.gate_pids(),
        }

    @cherrypy.expose
    @cherrypy.tools.json_out()
    def readyz(self) -> dict[str, Any]:
        checks = self.readiness.checks()
        ready = all(checks.values())
        return _reply(200 if ready else 503, {"ready": ready, "checks": checks})

    @cherrypy.expose
    def metrics(self) -> bytes:
        cherrypy.response.headers["Content-Type"] = "text/plain; version=0.0.4; charset=utf-8"
        return self.ctx.metrics.render()


def _route(request: Any) -> str:
    """A bounded label for the request-time histogram (never the raw path: any client picks it)."""
    named = getattr(request, "lakehook_route", None)
    if named:
        return str(named)
    path = f"{request.script_name}{request.path_info}"  # the webhooks time themselves
    if path.startswith("/api/"):
        return "api"
    if path in ("/healthz", "/readyz"):
        return "health"
    return "metrics" if path == "/metrics" else "other"


def _timer_start() -> None:
    cherrypy.request.lakehook_started = time.perf_counter()


def _timer_end() -> None:
    request = cherrypy.request
    started = getattr(request, "lakehook_started", None)
    ctx = getattr(getattr(request.app, "root", None), "ctx", None)
    if started is not None and isinstance(ctx, Context):
        ctx.metrics.requests.labels(_route(request)).observe(time.perf_counter() - started)


class _RequestTimer(cherrypy.Tool):  # type: ignore[misc]  # cherrypy is untyped
    """``lakehook_http_request_seconds``: from the handler's start to the response sent."""

    def __init__(self) -> None:
        super().__init__("on_start_resource", _timer_start, priority=0)

    def _setup(self) -> None:
        super()._setup()
        cherrypy.request.hooks.attach("on_end_request", _timer_end)


cherrypy.tools.lakehook_timer = _RequestTimer()


def _json_error(**page: Any) -> str:
    """CherryPy's error pages (404 of unknown paths, 413, 500) as JSON, without tracebacks."""
    cherrypy.response.headers["Content-Type"] = "application/json"
    return json.dumps({"error": page.get("message", ""), "status": page.get("status", "")})


def _json_body(*args: Any, **kwargs: Any) -> bytes:
    """``json_out``'s handler: the handler's value encoded by the C encoder in one call.

    CherryPy's own handler encodes with ``JSONEncoder().iterencode``, which is the pure-Python
    encoder yielding a chunk per token: ~10 % of the intake's interpreter time per webhook
    (py-spy, docs/benchmarks.md). The bytes are the same (the same separators)."""
    value = cherrypy.serving.request._json_inner_handler(*args, **kwargs)
    return json.dumps(value).encode()


def _no_access_line() -> None:
    return None


def quiet_access_log(level: str) -> None:
    """Above ``INFO``, the mounted apps skip the access line instead of formatting it.

    CherryPy builds each request's access line (eleven fields escaped one by one, a request id,
    a timestamp) before any logger decides whether to write it, and sets its access loggers to
    ``INFO`` itself; so at ``LAKEHOOK_LOG_LEVEL=WARNING`` every request still paid for a line
    nobody wrote: ~11 % of the intake's interpreter time per webhook (py-spy,
    docs/benchmarks.md). At ``INFO`` and below the access log is written as before."""
    if logging.getLevelName(level.upper()) <= logging.INFO:
        return
    for app in cherrypy.tree.apps.values():
        if isinstance(app, cherrypy.Application):  # not the grafted webhooks (no access line)
            app.log.access = _no_access_line


def mount(ctx: Context, *, with_workers: bool = True) -> WorkerPool | None:
    """Configure CherryPy, mount the app and subscribe workers and the reconciler."""
    ctx.settings.check_serving()
    host, _, port = ctx.settings.listen.rpartition(":")
    cherrypy.config.update(
        {
            "server.socket_host": host or "127.0.0.1",
            "server.socket_port": int(port),
            # a thread per request being read or answered (docs/security.md, slow clients)
            "server.thread_pool": ctx.settings.http_threads,
            "server.socket_timeout": ctx.settings.http_request_timeout,
            # a new connection takes a thread only once it sends something (server/httpserver.py)
            "server.instance": "server.httpserver.IntakeServer",
            "server.max_request_body_size": ctx.settings.max_body_bytes,
            "server.socket_queue_size": 128,
            "engine.autoreload.on": False,
            "log.screen": False,
            "log.access_file": "",
            "checker.on": False,
            "error_page.default": _json_error,
            "request.show_tracebacks": False,
            "tools.lakehook_timer.on": True,
            "tools.json_out.handler": _json_body,
        }
    )
    root = Root(ctx)
    cherrypy.tree.mount(root, "/", {"/": {}})
    # the webhooks skip CherryPy's request machinery (server/webhook.py)
    cherrypy.tree.graft(WebhookApp(ctx), "/webhooks")
    cherrypy.tree.mount(Api(ctx), "/api/v1", {"/": auth.config(ctx.settings.webhook_token)})
    quiet_access_log(ctx.settings.log_level)
    ctx.metrics.watch_jobs(ctx.queue.counts)
    subscribe_lineage(ctx)
    if not with_workers:
        return None
    pool = WorkerPool(
        cherrypy.engine,
        ctx.queue,
        ctx.processor,
        ctx.store,
        ctx.settings,
        ctx.metrics,
        lakefs=ctx.lakefs,
    )
    pool.subscribe()
    ctx.wake = pool.wake
    ctx.reconciler.wake = pool.wake
    if ctx.settings.reconcile_interval > 0:
        ReconcilerPlugin(
            cherrypy.engine, ctx.reconciler, ctx.settings.reconcile_interval
        ).subscribe()
    return pool


def subscribe_lineage(ctx: Context) -> None:
    """Deliver the lineage journal to Marquez while the bus runs (when one is configured)."""
    from pipeline.lineage.delivery import build_deliverer
    from server.lineage import LineageDeliveryPlugin, LineageMetrics

    deliverer = build_deliverer(ctx.settings)
    if deliverer is None:
        return
    LineageDeliveryPlugin(cherrypy.engine, deliverer).subscribe()
    ctx.metrics.watch(LineageMetrics(deliverer))


def build_context(
    settings: Settings,
    processor: Processor | None = None,
    lakefs: LakeFS | None = None,
    *,
    intake_only: bool = False,
) -> Context:
    """The composition root: database, queue, processor and adapters from ``settings``.

    ``intake_only``: the processor only reads (gate, reconcile requests), without lineage; the
    jobs run in the worker processes, which build their own.
    """
    from lakehook import faults
    from server.state import open_state

    faults.arm(settings.fault_point, settings.testing)  # tests only; refused otherwise
    # the intake's commits never checkpoint a SQLite WAL (its supervisor thread does, off the
    # request path): see ``server.store.Database``
    state = open_state(settings, "intake", checkpoints=not intake_only)
    store, queue = state.store, state.queue
    if processor is None or lakefs is None:
        from pipeline.service import build_processor

        service = build_processor(settings, store, lineage=not intake_only, lazy=intake_only)
        processor = processor or service
        lakefs = lakefs or service.lakefs
    metrics = Metrics()
    reconciler = Reconciler(
        lakefs,
        queue,
        store,
        metrics,
        processor=processor,
        max_refs=settings.reconcile_max_refs,
        discovery_interval=settings.discovery_interval,
        working_branch_grace=settings.working_branch_grace,
        server_url=settings.server_url,
        job_retention=settings.job_retention_days * 86400,
    )
    return Context(settings, store, queue, processor, lakefs, metrics, reconciler, state=state)


def serve(settings: Settings) -> None:
    """Run the intake here and the workers in supervised processes, until SIGTERM/SIGINT."""
    from server import metrics as metrics_module
    from server.supervisor import Supervisor, SupervisorPlugin

    metrics_module.use_directory(settings.state_dir / "metrics")
    # a thread waiting for the interpreter (a webhook's handler) gets it after 1 ms instead of
    # CPython's 5 (docs/benchmarks.md, bench_isolation)
    sys.setswitchinterval(0.001)
    from server.httpserver import raise_open_files_limit

    raise_open_files_limit()  # a descriptor per connection (docs/security.md, slow clients)
    ctx = build_context(settings, intake_only=True)
    assert ctx.state is not None
    if settings.gate_processes:
        from server.gate_process import GateProcesses

        gates = GateProcesses(settings)
        ctx.gate, ctx.gate_pids = gates.decide, gates.pids
        # started once the intake answers (a pre-merge before that waits within its budget)
        cherrypy.engine.subscribe(
            "start",
            lambda: threading.Thread(target=gates.start, name="gate-start", daemon=True).start(),
        )
        cherrypy.engine.subscribe("stop", gates.stop)
    else:  # the intake decides pre-merges itself, within the gate's budget: its clients are
        # built once it answers, off the request path, not by the first decision
        from pipeline.adapters.lazy import warm

        adapters = (ctx.lakefs, getattr(ctx.processor, "metastore", None))
        cherrypy.engine.subscribe(
            "start",
            lambda: threading.Thread(
                target=warm, args=adapters, name="warm-clients", daemon=True
            ).start(),
        )
    supervisor = Supervisor(settings, ctx.queue, ctx.state.quarantine(settings), ctx.metrics)
    ctx.workers = supervisor.workers
    mount(ctx, with_workers=False)
    SupervisorPlugin(cherrypy.engine, supervisor).subscribe()
    if hasattr(cherrypy.engine, "signal_handler"):
        cherrypy.engine.signal_handler.subscribe()
    cherrypy.engine.start()
    log.info(
        "lakehook serving on http://%s with %d worker process(es)",
        settings.listen,
        settings.workers,
    )
    cherrypy.engine.block()
