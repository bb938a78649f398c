"""The docs pages work offline: their scripts and styles come from the server itself (an installed
package), and a real headless browser that may reach no other host renders the endpoint list."""

from __future__ import annotations

import re
import shutil
import subprocess

import httpx
import pytest

from tests.api.conftest import Server

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def docs_server(tmp_path_factory):
    server = Server(tmp_path_factory.mktemp("docs") / "artifacts", launcher="queue", api_token="t" * 32)
    server.start()
    yield server
    server.stop()


def test_docs_pages_load_their_assets_from_the_server(docs_server):
    for page in ("/docs", "/redoc"):
        html = httpx.get(docs_server.url + page).text  # public: a browser sends no bearer token
        sources = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert sources and all(s.startswith("/") for s in sources), sources  # no CDN, no other host
        for source in sources:
            if source != "/openapi.json":
                response = httpx.get(docs_server.url + source)
                assert response.status_code == 200 and len(response.content) > 1000, source
    escape = httpx.get(docs_server.url + "/docs-assets/..%2Fsettings.py")
    assert escape.status_code in (401, 404) and b"Settings" not in escape.content  # listed names only
    assert httpx.get(docs_server.url + "/docs-assets/nope.js").status_code == 404


@pytest.mark.skipif(BROWSER is None, reason="needs Debian's chromium (CI installs it)")
def test_a_headless_browser_with_no_network_renders_the_endpoint_list(docs_server, tmp_path):
    command = [
        BROWSER,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",  # every other host unreachable
        "--virtual-time-budget=10000",
        "--dump-dom",
        docs_server.url + "/docs",
    ]
    dom = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True).stdout
    for path in ("/tune", "/evaluate", "/jobs/{job_id}", "/strategies"):
        assert f'data-path="{path}"' in dom, path  # Swagger UI rendered the operation
