"""gunicorn settings for production: gevent workers holding thousands of sockets each."""

import os

from gunicorn import glogging

bind = os.environ.get("CHATAPP_BIND", "127.0.0.1:8000")
worker_class = "gevent"
workers = int(os.environ.get("WEB_CONCURRENCY", "1"))
# One greenlet per open socket (plus one per HTTP request): size for thousands.
worker_connections = int(os.environ.get("CHATAPP_WORKER_CONNECTIONS", "10000"))
# Sockets are closed with 1012 on shutdown; nothing needs the default 30 s grace.
graceful_timeout = int(os.environ.get("CHATAPP_GRACEFUL_TIMEOUT", "5"))
timeout = 60
wsgi_app = "wsgi:app"
accesslog = os.environ.get("CHATAPP_ACCESS_LOG") or None
# gunicorn 24+ opens a control socket at one fixed path per user (~/.gunicorn/), so two
# instances on a machine take it from each other. Nothing here uses it.
control_socket_disable = True


def _chatapp_logs():
    """chatapp/logs.py, loaded by its path: importing the package here would import Flask
    in the master, before each gevent worker monkey-patches the standard library."""
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "chatapp", "logs.py")
    spec = importlib.util.spec_from_file_location("_chatapp_logs", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Logger(glogging.Logger):
    """gunicorn's logger: its lines in chatapp's format (CHATAPP_LOG_FORMAT), and health
    probes (GET /up) left out of the access log."""

    def setup(self, cfg):
        """Give gunicorn's own lines (boot, workers, errors) the app's format."""
        super().setup(cfg)
        logs = _chatapp_logs()
        if logs.log_format() == "json":
            for log in (self.error_log, self.access_log):
                for handler in log.handlers:
                    handler.setFormatter(logs.JsonFormatter())

    def access(self, resp, req, environ, request_time):
        """Log a request, unless it is a health probe and CHATAPP_LOG_HEALTH is not set."""
        if environ.get("PATH_INFO") == "/up" and not _log_health:
            return
        super().access(resp, req, environ, request_time)


# A load balancer probes every few seconds: those lines would drown everything else.
_log_health = os.environ.get("CHATAPP_LOG_HEALTH", "").lower() in {"1", "true", "yes", "on"}
logger_class = _Logger


def on_starting(server):
    """Refuse several workers without Redis: each would hold a separate, partial chat.
    With CHATAPP_METRICS, give the workers an empty folder to share their metrics in."""
    if os.environ.get("CHATAPP_METRICS", "").lower() in {"1", "true", "yes", "on"}:
        import glob
        import tempfile

        folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or tempfile.mkdtemp(prefix="chatapp-metrics-")
        os.makedirs(folder, exist_ok=True)
        for stale in glob.glob(os.path.join(folder, "*.db")):  # a previous run's numbers
            os.unlink(stale)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder  # inherited by every worker
    if server.cfg.workers > 1 and not os.environ.get("REDIS_URL"):
        raise SystemExit(
            f"chatapp: {server.cfg.workers} workers need REDIS_URL, so that a message "
            "posted on one worker reaches the sockets of the others (docs/deployment.md)"
        )


# -- shutdown: close sockets with 1012 at once -------------------------------------------
# gunicorn's gevent worker, told to stop (SIGTERM, a SIGHUP reload, max requests, a lost
# parent), stops accepting and then waits for open connections: every WebSocket would
# hold it for graceful_timeout and then be cut without a close code. Instead, the moment
# the worker stops being "alive", its sockets are closed with 1012 and htmx reconnects.


def _app_of(worker):
    """The Flask app a worker serves (wsgi.py's, even if wrapped in middleware)."""
    import sys

    app = getattr(worker, "wsgi", None)
    if not hasattr(app, "extensions"):
        app = getattr(sys.modules.get("wsgi"), "app", None)
    return app


def _close_sockets(worker) -> None:
    app = _app_of(worker)
    if app is None:
        return
    from chatapp.realtime import close_for_restart

    closed = close_for_restart(app)
    if closed:
        worker.log.info("closed %d sockets with 1012 (pid %s)", closed, worker.pid)


def post_worker_init(worker):
    """Watch the worker's alive flag and close its sockets as soon as it drops."""
    import threading  # patched by gevent by now: this is a greenlet
    import time

    def watch():
        while worker.alive:
            time.sleep(0.1)
        _close_sockets(worker)

    threading.Thread(target=watch, daemon=True, name="shutdown-watch").start()


def worker_int(worker):
    """SIGINT/SIGQUIT (quick shutdown): close sockets before the worker exits."""
    _close_sockets(worker)


def worker_exit(server, worker):
    """Last chance on any exit path."""
    _close_sockets(worker)


def child_exit(server, worker):
    """A worker is gone: its open-socket and pool gauges no longer count."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
