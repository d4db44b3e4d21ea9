"""The stack's Marquez pieces without the stack: source pin, progress lines, env, web UI server."""

from __future__ import annotations

import io
import json
import tarfile
import threading
import urllib.request
from collections.abc import Iterator
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from lakehook.errors import ConfigError
from lakehook.settings import Settings
from lakehook.stack import install, versions
from lakehook.stack.commands import stack_settings
from lakehook.stack.webui import WebUIHandler


def make_archive(path: Path, files: dict[str, bytes], xz: bool = False) -> Path:
    with tarfile.open(path, "w:xz" if xz else "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"marquez-0.51.1/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_source_digest_covers_api_and_web_but_not_docs_nor_compression(tmp_path: Path) -> None:
    files = {"api/a.java": b"class A {}", "web/package.json": b"{}"}
    base = install.source_digest(make_archive(tmp_path / "a.tar.gz", files))
    extra = {**files, "web/docs/demo.gif": b"GIF", "clients/x.py": b"x", "LICENSE": b"L"}
    assert install.source_digest(make_archive(tmp_path / "b.tar.xz", extra, xz=True)) == base
    changed = {**files, "api/a.java": b"class B {}"}
    assert install.source_digest(make_archive(tmp_path / "c.tar.gz", changed)) != base


def test_vendored_source_matches_the_pin() -> None:
    vendored = Path(__file__).resolve().parents[3] / "shared/vendor/marquez-0.51.1-src.tar.gz"
    if not vendored.exists():
        pytest.fail(f"{vendored} is missing: the repository expects ../shared/vendor beside it")
    assert install.source_digest(vendored) == versions.MARQUEZ_SOURCE_SHA256


def test_a_missing_or_wrong_source_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LAKEHOOK_STACK_DIR", str(tmp_path / "stack"))
    with pytest.raises(ConfigError, match="no such file.*LAKEHOOK_MARQUEZ_SOURCE|source archive"):
        install.marquez_source_archive(str(tmp_path / "nope.tar.gz"))
    wrong = make_archive(tmp_path / "wrong.tar.gz", {"api/a.java": b"x"})
    with pytest.raises(ConfigError, match="is not the Marquez 0.51.1 source"):
        install.marquez_source_archive(str(wrong))


def test_long_steps_print_progress_with_component_phase_and_elapsed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(install, "PROGRESS_EVERY", 0.1)
    install.run(["sleep", "0.45"], what="mvn package", component="marquez")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) >= 3
    assert all(line.startswith("  marquez: mvn package ... ") for line in lines)
    assert lines[-1].endswith("0s")


def test_stack_env_names_the_stacks_marquez_but_the_default_stays_empty() -> None:
    settings = Settings.load(environ={})
    assert settings.marquez_url == ""
    exports = stack_settings(settings).export_lines()
    assert "export LAKEHOOK_MARQUEZ_URL=http://127.0.0.1:5000" in exports
    assert "export LAKEHOOK_MARQUEZ_WEB_URL=http://127.0.0.1:3000" in exports
    mine = Settings.load(environ={"LAKEHOOK_MARQUEZ_URL": "http://m:5100"})
    assert "export LAKEHOOK_MARQUEZ_URL=http://m:5100" in stack_settings(mine).export_lines()
    assert not any("MARQUEZ_SOURCE" in line for line in exports)


class FakeAPI(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def do_GET(self) -> None:  # noqa: N802
        body = json.dumps({"path": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def serve_in_thread(server: ThreadingHTTPServer) -> str:
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture
def web(tmp_path: Path) -> Iterator[str]:
    (tmp_path / "index.html").write_text("<html>marquez</html>")
    (tmp_path / "bundle.js").write_text("console.log(1)")
    api = ThreadingHTTPServer(("127.0.0.1", 0), FakeAPI)
    api_url = serve_in_thread(api)
    ui = ThreadingHTTPServer(("127.0.0.1", 0), partial(WebUIHandler, root=tmp_path, api=api_url))
    yield serve_in_thread(ui)
    ui.shutdown()
    api.shutdown()


def fetch(url: str) -> tuple[int, str, str]:
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310
        return response.status, response.headers["Content-Type"], response.read().decode()


def test_web_ui_serves_files_routes_and_proxies_the_api(web: str) -> None:
    assert fetch(f"{web}/bundle.js")[2] == "console.log(1)"
    status, kind, body = fetch(f"{web}/lineage/dataset/ns/a.b")
    assert (status, kind, body) == (200, "text/html", "<html>marquez</html>")
    assert fetch(f"{web}/../../etc/passwd")[2] == "<html>marquez</html>"
    status, kind, body = fetch(f"{web}/api/v1/lineage?nodeId=dataset:ns:x")
    assert kind == "application/json"
    assert json.loads(body) == {"path": "/api/v1/lineage?nodeId=dataset:ns:x"}
    assert fetch(f"{web}/healthcheck")[2] == "OK"
