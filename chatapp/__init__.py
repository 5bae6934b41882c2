"""chatapp: a self-hosted real-time chat server built on server-rendered hypermedia."""

import os
import secrets
import zlib

from flask import Flask, g, render_template, request


def dom_id(obj, prefix: str | None = None) -> str:
    """The DOM id of a model object (message-42), shared by pages and pushes."""
    name = prefix or type(obj).__name__.lower()
    return f"{name}-{obj.id}"


# Stand-in ids for building a URL pattern once (no real id is this large).
_STAND_IN = 7_346_019_283
_url_patterns: dict = {}


def id_url(endpoint: str, **ids: int) -> str:
    """url_for(endpoint, **ids) for integer ids, at a fraction of its cost.

    A message's partial links to four routes by its ids; url_for matches the route
    again each time. The URL is built once per endpoint (and script root) with stand-in
    ids, and later ones only put the ids in their places.
    """
    from flask import has_request_context, url_for

    key = (endpoint, tuple(ids), request.script_root if has_request_context() else None)
    pattern = _url_patterns.get(key)
    if pattern is None:
        url = url_for(endpoint, **{name: _STAND_IN + i for i, name in enumerate(ids)})
        url = url.replace("{", "{{").replace("}", "}}")
        for i, name in enumerate(ids):
            url = url.replace(str(_STAND_IN + i), "{" + name + "}")
        pattern = _url_patterns[key] = url
    return pattern.format_map({name: int(value) for name, value in ids.items()})


def hash_hue(name: str) -> int:
    """One of twelve avatar colours, always the same for a username."""
    return zlib.crc32(name.encode()) % 12


def create_app(test_config: dict | None = None) -> Flask:
    """Build the application: configuration, extensions, blueprints, real-time hub."""
    app = Flask(__name__, instance_relative_config=True)
    instance = os.environ.get("CHATAPP_INSTANCE_PATH")
    if instance:
        app.instance_path = instance
    os.makedirs(app.instance_path, exist_ok=True)

    from .config import from_environment

    app.config.from_mapping(from_environment(app.instance_path, app.root_path))
    if test_config:
        app.config.update(test_config)
    os.makedirs(app.config["UPLOAD_DIR"], exist_ok=True)
    if app.config.get("TRUSTED_PROXIES"):
        from werkzeug.middleware.proxy_fix import ProxyFix

        # Behind a TLS proxy: the client's address (throttling, logs) and scheme come
        # from the headers the proxy sets, for exactly that many hops.
        hops = app.config["TRUSTED_PROXIES"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)
    from . import cooperative

    cooperative.install(app)  # a large upload's body is read without holding the event loop
    app.config.setdefault(
        "SOCK_SERVER_OPTIONS", {"max_message_size": app.config["MAX_FRAME_BYTES"]}
    )
    # Rate-limit counters: per process in memory, or shared by every worker in Redis.
    app.config.setdefault("RATELIMIT_STORAGE_URI", app.config.get("REDIS_URL") or "memory://")
    if app.config["RATELIMIT_STORAGE_URI"].startswith("redis"):
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        # Fail fast when Redis is down (the in-memory fallback takes over), no retries.
        app.config["RATELIMIT_STORAGE_OPTIONS"] = {
            **app.config.get("RATELIMIT_STORAGE_OPTIONS", {}), "retry": Retry(NoBackoff(), 0)
        }
    from . import logs

    logs.init_app(app)  # text or JSON lines (CHATAPP_LOG_FORMAT), request ids

    from werkzeug.routing import IntegerConverter

    # Blueprints and the rest are imported here, not at the top: importing any chatapp
    # module (chatapp.passwords, chatapp.models) must not build the whole app first, and
    # wsgi.py's gevent monkey-patch must run before they import their libraries.
    from . import account, admin, api, assets, auth, chat, cli, fragments, health, icons, messages
    from . import metrics, realtime, rooms
    from . import search, storage, uploads
    from . import admin_rooms  # noqa: F401 - adds the rooms pages to the admin blueprint
    from . import room_settings  # noqa: F401 - adds a room's settings to the rooms blueprint
    from .models import MAX_ID, Reaction
    from .posting import new_client_id
    from .realtime import ws

    class IdConverter(IntegerConverter):
        """<int:...> in our URLs: a number larger than any id becomes 0, which no row has,
        so the view answers as for any absent row (PostgreSQL would refuse the query).
        (A converter's max would answer 405 to a POST: werkzeug then sees only the
        route's GET.)"""

        def to_python(self, value: str) -> int:
            number = super().to_python(value)
            return number if number <= MAX_ID else 0

    app.url_map.converters["int"] = IdConverter
    from .extensions import csrf, db, limiter, login_manager, migrate, sock
    from . import search_index  # keeps the search index in step with messages
    from .database import configure_engine

    db.init_app(app)
    with app.app_context():
        configure_engine(db.engine)
    migrate.init_app(
        app, db, directory=os.path.join(os.path.dirname(app.root_path), "migrations"),
        render_as_batch=True, include_object=search_index.schema_object,
    )
    from flask_babel import gettext

    from . import i18n

    i18n.init_app(app)  # languages and time zones (Flask-Babel)
    login_manager.init_app(app)
    login_manager.login_view = "auth.login"
    login_manager.login_message = i18n.N_("Log in to chat.")
    login_manager.localize_callback = gettext  # flashed in the person's language
    login_manager.session_protection = "basic"
    csrf.init_app(app)
    limiter.init_app(app)
    sock.init_app(app)

    app.register_blueprint(auth.bp)
    app.register_blueprint(chat.bp)
    app.register_blueprint(rooms.bp)
    app.register_blueprint(messages.bp)
    app.register_blueprint(admin.bp)
    app.register_blueprint(search.bp)
    app.register_blueprint(api.bp)
    account.init_app(app)
    fragments.init_app(app)  # rendered messages, shared by pages and pushes
    realtime.init_app(app)
    app.register_blueprint(ws.bp)
    storage.init_app(app)  # refuses to start with a bucket that refuses our credentials
    uploads.init_app(app)
    cli.init_app(app)
    assets.init_app(app)
    health.init_app(app)
    icons.init_app(app)
    metrics.init_app(app)

    app.register_error_handler(429, auth.too_many_requests)
    _register_error_pages(app)
    app.jinja_env.globals["dom_id"] = dom_id
    app.jinja_env.globals["id_url"] = id_url
    app.jinja_env.globals["new_client_id"] = new_client_id
    app.jinja_env.globals["reactions_for"] = lambda ms: Reaction.summary(m.id for m in ms)
    app.jinja_env.filters["hash_hue"] = hash_hue

    @app.before_request
    def _nonce():
        g.csp_nonce = secrets.token_urlsafe(16)

    @app.after_request
    def _security_headers(response):
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; script-src 'self'; "
            f"style-src 'self' 'nonce-{g.get('csp_nonce', '')}'; img-src 'self' data:; "
            "connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'",
        )
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        # HTTPS only from now on, once served over it (directly, or through a trusted TLS
        # proxy: ProxyFix has set the scheme) by a deployment that said so with its cookies.
        if request.is_secure and app.config["SESSION_COOKIE_SECURE"]:
            response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
        return response

    return app


def _register_error_pages(app: Flask) -> None:
    """Plain pages for errors that say what happened and what to do."""
    from flask_babel import gettext as _, lazy_gettext as _l

    messages = {
        400: _l("That request could not be understood."),
        403: _l("You are not allowed to see this."),
        404: _l("There is nothing here. It may never have existed, or it is not yours to see."),
        413: _l("That file is too large."),
    }

    from .api import json_error_page

    def handler(exc):
        if request.path.startswith("/api/"):  # scripts read JSON errors, not pages
            return json_error_page(exc)
        code = getattr(exc, "code", 500)
        message = messages.get(code) or _("Something went wrong.")
        description = getattr(exc, "description", None)
        if code == 400 and description and "CSRF" in description:
            message = _("The form expired or was not sent by this site. Reload the page and try again.")
        elif code == 400 and description and not description.startswith("The browser"):
            message = description
        return render_template("error.html", code=code, message=message), code

    for code in messages:
        app.register_error_handler(code, handler)
    app.register_error_handler(
        405, lambda exc: json_error_page(exc) if request.path.startswith("/api/") else exc)
