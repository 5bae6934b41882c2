"""Static files with cache-busting URLs: ?v=<content hash>, cached for a year by browsers."""

import hashlib
import os

from flask import Flask, request

ONE_YEAR = 365 * 24 * 3600


def static_version(app: Flask, filename: str) -> str | None:
    """A short hash of a static file's content (None when there is no such file)."""
    path = os.path.join(app.static_folder, filename)
    try:
        stat = os.stat(path)
    except OSError:
        return None
    key = (path, stat.st_mtime_ns, stat.st_size)
    cache = app.extensions.setdefault("static_versions", {})
    if key not in cache:
        with open(path, "rb") as f:
            cache[key] = hashlib.sha256(f.read()).hexdigest()[:12]
    return cache[key]


def init_app(app: Flask) -> None:
    """Version every url_for('static', ...) and let browsers keep versioned files."""

    @app.url_defaults
    def _version_static(endpoint, values):
        if endpoint == "static" and "v" not in values and "filename" in values:
            version = static_version(app, values["filename"])
            if version:
                values["v"] = version

    @app.after_request
    def _cache_versioned(response):
        # Only a URL whose version matches the file is immutable; a stale one is not kept.
        if (
            request.endpoint == "static"
            and response.status_code == 200
            and request.args.get("v")
            and request.args["v"] == static_version(app, request.view_args["filename"])
        ):
            response.cache_control.public = True
            response.cache_control.max_age = ONE_YEAR
            response.cache_control.immutable = True
            response.cache_control.no_cache = None
        return response
