"""Liveness and readiness for an orchestrator, served beside /metrics on one port.

- `/healthz`: the process is alive: its event loop runs a no-op within the timeout
  (a wedged loop serves no posts, so a restart is the cure).
- `/readyz`: every registered check passes (partitions assigned, Kafka, Redis, the
  classifier); 503 with the failing checks otherwise.
- `/metrics`: prometheus_client's exposition, unchanged.

Checks are coroutines run on the worker's own event loop (the HTTP server answers from
its own thread), so they use the worker's clients and see its state. prometheus_client's
`start_http_server` cannot add routes, hence this small stdlib WSGI server around its
`make_wsgi_app`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from concurrent.futures import TimeoutError as FutureTimeout
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

log = logging.getLogger(__name__)

Check = Callable[[], Awaitable[None]]
"""Returns when the dependency is fine; raises (any exception, its text is shown) when not."""


class Health:
    """Named readiness checks, run on the event loop that built this object."""

    def __init__(self, timeout_s: float = 2.0, loop: asyncio.AbstractEventLoop | None = None):
        self.timeout_s = timeout_s
        self._loop = loop or asyncio.get_running_loop()
        self._checks: dict[str, Check] = {}

    def add(self, name: str, check: Check) -> None:
        """Register a readiness check under `name`."""
        self._checks[name] = check

    async def _one(self, check: Check) -> str:
        try:
            await asyncio.wait_for(check(), self.timeout_s)
        except TimeoutError:
            return f"timed out after {self.timeout_s:g}s"
        except Exception as exc:
            return str(exc) or type(exc).__name__
        return "ok"

    async def check(self) -> dict[str, str]:
        """Every check's result: "ok" or why not."""
        names = list(self._checks)
        results = await asyncio.gather(*(self._one(self._checks[n]) for n in names))
        return dict(zip(names, results, strict=True))

    def _on_loop(self, coro: Coroutine[Any, Any, Any]) -> Any:
        # Called from a server thread: the loop must answer within the timeout.
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(self.timeout_s + 1.0)
        except FutureTimeout:
            future.cancel()
            raise

    def alive(self) -> bool:
        """True when the event loop runs a no-op in time."""
        if self._loop.is_closed():
            return False
        try:
            self._on_loop(asyncio.sleep(0))
        except (FutureTimeout, RuntimeError):
            return False
        return True

    def ready(self) -> tuple[bool, dict[str, str]]:
        """Whether every check passed, and each check's result."""
        try:
            results: dict[str, str] = self._on_loop(self.check())
        except (FutureTimeout, RuntimeError):
            return False, {"event_loop": "not answering"}
        return all(v == "ok" for v in results.values()), results


def when(flag: asyncio.Event, detail: str) -> Check:
    """A check that passes once `flag` is set (e.g. partitions assigned)."""

    async def check() -> None:
        if not flag.is_set():
            raise RuntimeError(detail)

    return check


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # probes every few seconds
        pass


def _app(registry: CollectorRegistry, health: Health | None) -> Callable[..., Iterable[bytes]]:
    metrics = make_wsgi_app(registry)

    def reply(start: Callable[..., Any], status: str, body: dict[str, Any]) -> list[bytes]:
        data = json.dumps(body).encode()
        start(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
        return [data]

    def app(environ: dict[str, Any], start: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/healthz":
            ok = health is None or health.alive()
            return reply(start, "200 OK" if ok else "503 Service Unavailable", {"alive": ok})
        if path == "/readyz":
            ok, checks = (True, {}) if health is None else health.ready()
            status = "200 OK" if ok else "503 Service Unavailable"
            return reply(start, status, {"ready": ok, "checks": checks})
        return metrics(environ, start)  # type: ignore[no-any-return]

    return app


class HttpEndpoint:
    """/metrics, /healthz and /readyz on host:port, answered from a daemon thread."""

    def __init__(
        self, registry: CollectorRegistry, host: str, port: int, health: Health | None
    ) -> None:
        self._server = make_server(
            host, port, _app(registry, health), server_class=_Server, handler_class=_QuietHandler
        )
        self.port: int = self._server.server_port
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"http-{self.port}", daemon=True
        )
        self._thread.start()
        log.info("serving /metrics /healthz /readyz on %s:%d", host, self.port)

    def close(self) -> None:
        """Stop serving and free the port."""
        self._server.shutdown()
        self._server.server_close()
