"""gunicorn settings for production: gevent workers holding thousands of sockets each."""

import os

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
