"""The tab's icon with its unread count, the app's icons, and the web app manifest.

The favicon is a small SVG rendered by the server, one URL per state ("0" to "9", and
"9+"), so a browser caches each for a year and a push that changes the count only swaps
the page's `<link rel="icon">` for another URL (partials/_favicon.html). The manifest
lets a phone add chatapp to its home screen; there is no service worker (it would be
JavaScript of ours).
"""

from __future__ import annotations

import functools
import io
import json

from flask import Blueprint, Response, abort, has_request_context, render_template, url_for
from PIL import Image, ImageDraw

bp = Blueprint("icons", __name__)

STATES = {str(n) for n in range(10)} | {"9+"}
YEAR = 365 * 24 * 3600
ACCENT = "#4f46e5"
CANVAS = "#f4f5f8"
PNG_SIZES = (192, 512)


def favicon_state(total) -> str:
    """The favicon state for an unread total: its count up to 9, then "9+"."""
    total = int(total or 0)
    return "9+" if total > 9 else str(max(total, 0))


def favicon_url(total) -> str:
    """The favicon's URL for an unread total (a push may render outside any request,
    where the app is served from the root)."""
    state = favicon_state(total)
    if has_request_context():
        return url_for("icons.favicon", state=state)
    return f"/favicon/{state}.svg"


def _cached(response: Response) -> Response:
    """A URL whose content never changes: cached for a year by browsers and proxies."""
    response.headers["Cache-Control"] = f"public, max-age={YEAR}, immutable"
    return response


@bp.get("/favicon/<state>.svg")
def favicon(state: str):
    """The tab's icon: the chatapp mark, with a red count when anything is unread."""
    if state not in STATES:
        abort(404)
    svg = render_template("icons/favicon.svg", state=state, accent=ACCENT)
    return _cached(Response(svg, mimetype="image/svg+xml"))


@bp.get("/favicon.ico")
def favicon_ico():
    """Browsers that ask for /favicon.ico by habit get the plain icon."""
    return _cached(Response(render_template("icons/favicon.svg", state="0", accent=ACCENT),
                            mimetype="image/svg+xml"))


@functools.cache
def _png(size: int) -> bytes:
    """The app icon as a PNG (home screens want bitmaps): a speech bubble on the accent."""
    image = Image.new("RGBA", (size, size), ACCENT)
    draw = ImageDraw.Draw(image)
    unit = size / 24
    # The brand mark (partials/_brand.html), drawn with rectangles and a triangle.
    draw.rounded_rectangle((5 * unit, 5 * unit, 19 * unit, 15.5 * unit), radius=3 * unit,
                           fill="white")
    draw.polygon([(7 * unit, 15 * unit), (7 * unit, 19.5 * unit), (11.5 * unit, 15 * unit)],
                 fill="white")
    out = io.BytesIO()
    image.save(out, "PNG", optimize=True)
    return out.getvalue()


@bp.get("/icons/<int:size>.png")
def icon_png(size: int):
    """The app icon in the sizes the manifest lists."""
    if size not in PNG_SIZES:
        abort(404)
    return _cached(Response(_png(size), mimetype="image/png"))


@bp.get("/manifest.webmanifest")
def manifest():
    """The web app manifest: name, icons, colours, standalone display."""
    body = {
        "name": "chatapp",
        "short_name": "chatapp",
        "description": "Chat with your people, live.",
        "start_url": url_for("chat.index"),
        "scope": "/",
        "display": "standalone",
        "background_color": CANVAS,
        "theme_color": ACCENT,
        "icons": [
            {"src": url_for("icons.favicon", state="0"), "sizes": "any",
             "type": "image/svg+xml"},
            *({"src": url_for("icons.icon_png", size=s), "sizes": f"{s}x{s}",
               "type": "image/png", "purpose": "any maskable"} for s in PNG_SIZES),
        ],
    }
    response = Response(json.dumps(body, indent=1), mimetype="application/manifest+json")
    response.headers["Cache-Control"] = "public, max-age=3600"
    return response


def init_app(app) -> None:
    """Register the icons' routes and the template helper the favicon link uses."""
    app.register_blueprint(bp)
    app.jinja_env.globals["favicon_url"] = favicon_url
