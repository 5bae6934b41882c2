"""Prometheus metrics at GET /metrics: off unless CHATAPP_METRICS=1, only for allowed addresses.

Under gunicorn every worker writes its numbers to files in PROMETHEUS_MULTIPROC_DIR
(gunicorn.conf.py makes one) and a scrape of any worker sums them all. The calls below
cost nothing when metrics are off: prometheus_client is not even imported.
"""

from __future__ import annotations

import ipaddress
import os
import time

from flask import Blueprint, Response, abort, current_app, g, request

bp = Blueprint("metrics", __name__)
_m = None  # the metric objects, made once per process when metrics are on

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class _Metrics:
    """Every metric chatapp exports."""

    def __init__(self):
        from prometheus_client import Counter, Gauge, Histogram

        self.sockets_open = Gauge("chatapp_sockets_open", "Open sockets", multiprocess_mode="livesum")
        self.socket_connects = Counter("chatapp_socket_connects", "Sockets opened")
        self.socket_closes = Counter("chatapp_socket_closes", "Sockets closed, by close code "
                                     "(1013: a slow client whose backlog overflowed)", ["code"])
        self.refusals = Counter("chatapp_refusals", "Handshakes and frames refused, by reason",
                                ["reason"])
        self.messages = Counter("chatapp_messages_posted", "Messages stored (text and images)")
        self.deliveries = Counter("chatapp_message_deliveries",
                                  "Messages pushed live, once per recipient per worker")
        self.backplane_lag = Histogram("chatapp_backplane_lag_seconds",
                                       "From a message's publish to its delivery in a worker",
                                       buckets=LATENCY_BUCKETS)
        self.post_latency = Histogram("chatapp_message_post_seconds",
                                      "From a composer frame arriving to its acknowledgement",
                                      buckets=LATENCY_BUCKETS)
        self.http_latency = Histogram("chatapp_http_request_seconds",
                                      "HTTP request duration by route", ["route", "method"],
                                      buckets=LATENCY_BUCKETS)
        self.db_pool = Gauge("chatapp_db_pool_in_use", "Database connections checked out",
                             multiprocess_mode="livesum")
        self.login_failures = Counter("chatapp_login_failures", "Login form posts refused")


# -- the calls made by the rest of chatapp (each a no-op when metrics are off) ------------


def socket_opened() -> None:
    """Count a socket that opened."""
    if _m:
        _m.socket_connects.inc()
        _m.sockets_open.inc()


def socket_closed(code: int) -> None:
    """Count a socket that closed, by its close code."""
    if _m:
        _m.sockets_open.dec()
        _m.socket_closes.labels(str(code)).inc()


def refused(reason: str) -> None:
    """Count a refused handshake or frame."""
    if _m:
        _m.refusals.labels(reason).inc()


def published(event: dict) -> None:
    """Count a stored message as it is announced, and stamp when (for the backplane lag)."""
    if _m and event["type"] == "message_created":
        _m.messages.inc()
        event["published_at"] = time.time()


def delivered(event: dict, recipients: int) -> None:
    """Count a message's live deliveries here, and how long it took to get here."""
    if _m:
        _m.deliveries.inc(recipients)
        if "published_at" in event:
            _m.backplane_lag.observe(max(0.0, time.time() - event["published_at"]))


def acknowledged(started: float) -> None:
    """Time from a composer frame's arrival (perf_counter) to its acknowledgement."""
    if _m:
        _m.post_latency.observe(time.perf_counter() - started)


# -- wiring ----------------------------------------------------------------------------------

# Handshake refusals (ws.py's before_request aborts) by status: no call needed there.
_HANDSHAKE_REFUSALS = {403: "handshake_forbidden", 404: "handshake_not_member",
                       429: "handshake_too_many_sockets"}


def init_app(app) -> None:
    """Turn metrics on when CHATAPP_METRICS is set: the route and the per-request numbers."""
    global _m
    if not app.config.get("METRICS"):
        return
    if _m is None:
        _m = _Metrics()
    allowed = [ipaddress.ip_network(n.strip(), strict=False)
               for n in app.config["METRICS_ALLOW"].split(",") if n.strip()]
    app.extensions["chatapp.metrics_allow"] = allowed
    app.register_blueprint(bp)

    @app.before_request
    def _start_timer():
        g.metrics_started = time.perf_counter()

    @app.after_request
    def _count_request(response):
        started = g.get("metrics_started")
        if started is None or request.url_rule is None:
            return response
        status = response.status_code
        if request.blueprint == "realtime" and status in _HANDSHAKE_REFUSALS:
            refused(_HANDSHAKE_REFUSALS[status])
        elif request.blueprint == "realtime":
            return response  # a socket's "request" lasts as long as the socket
        if request.endpoint == "auth.login" and request.method == "POST" and status != 302:
            _m.login_failures.inc()
        _m.http_latency.labels(request.url_rule.rule, request.method).observe(
            time.perf_counter() - started)
        from .extensions import db

        pool = db.engine.pool
        if hasattr(pool, "checkedout"):
            _m.db_pool.set(pool.checkedout())
        return response


def _allowed() -> bool:
    """Whether the caller's address is in CHATAPP_METRICS_ALLOW (and came straight here)."""
    if not current_app.config.get("TRUSTED_PROXIES") and "X-Forwarded-For" in request.headers:
        # Came through a proxy we were not told about: its loopback address is not the caller's.
        return False
    try:
        address = ipaddress.ip_address(request.remote_addr or "")
    except ValueError:
        return False
    return any(address in network for network in current_app.extensions["chatapp.metrics_allow"])


@bp.get("/metrics")
def metrics():
    """Every worker's metrics in Prometheus's text format, for allowed addresses only."""
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

    if not _allowed():
        abort(403)
    registry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    response = Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
    response.headers["Cache-Control"] = "no-store"
    return response
