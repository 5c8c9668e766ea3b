"""Tests for ragrec.data._download: real HTTP over loopback, real zip files."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ragrec.data._download import DATASETS, default_cache_dir, download_dataset
from ragrec.errors import ConfigError, DatasetUnavailableError

FILES = ("README.txt", "links.csv", "movies.csv", "ratings.csv", "tags.csv")
FOLDER = "ml-latest-small"


def make_zip(
    src: Path, out: Path, *, prefix: str = f"{FOLDER}/", tamper: str | None = None
) -> Path:
    """Zip the dataset like GroupLens does; optionally alter one file's bytes."""
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        if prefix:
            zf.writestr(prefix, b"")
        for name in FILES:
            data = (src / name).read_bytes()
            if name == tamper:
                data += b"1,1,5.0,0\n"
            zf.writestr(prefix + name, data)
    return out


def tree_digest(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.iterdir())
        if p.is_file()
    }


@dataclass
class Server:
    """A loopback HTTP server serving fixed bodies and counting requests."""

    port: int
    routes: dict[str, bytes] = field(default_factory=dict)
    hits: list[str] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture
def server() -> Iterator[Server]:
    state = Server(port=0)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.hits.append(self.path)
            body = state.routes.get(self.path)
            if body is None:
                self.send_error(404, "Not Found")
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/zip")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def shared(ml_small_path: Path) -> Path:
    """The shared ml-latest-small folder, through the conftest fixture."""
    return ml_small_path


@pytest.fixture(scope="module")
def good_zip(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_zip(shared, tmp_path_factory.mktemp("zips") / f"{FOLDER}.zip")


def test_spec_lists_the_five_files() -> None:
    spec = DATASETS["movielens-small"]
    assert spec.folder == FOLDER
    assert spec.url == "https://files.grouplens.org/datasets/movielens/ml-latest-small.zip"
    assert sorted(spec.sha256) == sorted(FILES)


def test_default_cache_dir_is_under_home() -> None:
    assert default_cache_dir() == Path.home() / ".cache" / "ragrec" / "datasets"


def test_download_verifies_and_caches(
    server: Server, good_zip: Path, shared: Path, tmp_path: Path
) -> None:
    server.routes["/ml.zip"] = good_zip.read_bytes()
    dest = tmp_path / "cache"

    first = download_dataset(dest=dest, url=server.url("/ml.zip"), timeout=10)

    assert first == dest / FOLDER
    assert tree_digest(first) == tree_digest(shared)
    assert [p.name for p in dest.iterdir()] == [FOLDER]  # no temp leftovers
    assert server.hits == ["/ml.zip"]

    second = download_dataset(dest=dest, url=server.url("/ml.zip"), timeout=10)
    assert second == first
    assert server.hits == ["/ml.zip"]  # cache hit: server not contacted

    download_dataset(dest=dest, url=server.url("/ml.zip"), timeout=10, force=True)
    assert server.hits == ["/ml.zip", "/ml.zip"]
    assert tree_digest(first) == tree_digest(shared)
    assert [p.name for p in dest.iterdir()] == [FOLDER]


def test_tampered_download_is_rejected_and_leaves_nothing(
    server: Server, shared: Path, tmp_path: Path
) -> None:
    bad = make_zip(shared, tmp_path / "bad.zip", tamper="ratings.csv")
    server.routes["/bad.zip"] = bad.read_bytes()
    dest = tmp_path / "cache"

    with pytest.raises(DatasetUnavailableError) as excinfo:
        download_dataset(dest=dest, url=server.url("/bad.zip"), timeout=10)

    message = str(excinfo.value)
    assert "ratings.csv" in message
    assert DATASETS["movielens-small"].sha256["ratings.csv"] in message
    assert "--from" in message
    assert "movies.csv" not in message
    assert list(dest.iterdir()) == []


def test_closed_port_suggests_local_copy(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/ml-latest-small.zip"

    with pytest.raises(DatasetUnavailableError) as excinfo:
        download_dataset(dest=tmp_path / "cache", url=url, timeout=5)

    message = str(excinfo.value)
    assert message.startswith(f"could not download movielens-small from {url}: ")
    assert "--from" in message
    assert "\n" not in message
    assert list((tmp_path / "cache").iterdir()) == []


def test_http_error_is_reported(server: Server, tmp_path: Path) -> None:
    with pytest.raises(DatasetUnavailableError, match=r"HTTP 404.*--from"):
        download_dataset(dest=tmp_path / "cache", url=server.url("/missing.zip"), timeout=10)


def test_not_a_zip_is_reported(server: Server, tmp_path: Path) -> None:
    server.routes["/page.zip"] = b"<html>captive portal</html>"
    with pytest.raises(DatasetUnavailableError, match="not a readable zip"):
        download_dataset(dest=tmp_path / "cache", url=server.url("/page.zip"), timeout=10)
    assert list((tmp_path / "cache").iterdir()) == []


def test_source_folder_is_copied_and_untouched(shared: Path, tmp_path: Path) -> None:
    before = tree_digest(shared)

    out = download_dataset(dest=tmp_path / "cache", source=shared)

    assert out == tmp_path / "cache" / FOLDER
    assert tree_digest(out) == before
    assert tree_digest(shared) == before
    assert all(os.access(out / f, os.W_OK) for f in FILES)


@pytest.mark.parametrize("prefix", [f"{FOLDER}/", ""], ids=["grouplens-layout", "flat"])
def test_source_zip(shared: Path, tmp_path: Path, prefix: str) -> None:
    archive = make_zip(shared, tmp_path / "local.zip", prefix=prefix)
    out = download_dataset(dest=tmp_path / "cache", source=archive)
    assert tree_digest(out) == tree_digest(shared)
    assert archive.is_file()


def test_tampered_source_zip_is_rejected(shared: Path, tmp_path: Path) -> None:
    archive = make_zip(shared, tmp_path / "local.zip", tamper="movies.csv")
    with pytest.raises(DatasetUnavailableError, match=r"movies\.csv"):
        download_dataset(dest=tmp_path / "cache", source=archive)
    assert list((tmp_path / "cache").iterdir()) == []


def test_missing_source_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / FOLDER
    with pytest.raises(DatasetUnavailableError, match="does not exist") as excinfo:
        download_dataset(dest=tmp_path / "cache", source=missing)
    assert str(missing) in str(excinfo.value)


def test_source_folder_missing_files_is_reported(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetUnavailableError, match=r"lacks .*ratings\.csv"):
        download_dataset(dest=tmp_path / "cache", source=empty)


def test_damaged_cache_is_an_error_until_forced(shared: Path, tmp_path: Path) -> None:
    dest = tmp_path / "cache"
    out = download_dataset(dest=dest, source=shared)
    (out / "tags.csv").write_bytes(b"userId,movieId,tag,timestamp\n")

    with pytest.raises(DatasetUnavailableError, match=r"tags\.csv.*delete") as excinfo:
        download_dataset(dest=dest, source=shared)
    assert str(out) in str(excinfo.value)

    download_dataset(dest=dest, source=shared, force=True)
    assert tree_digest(out) == tree_digest(shared)


def test_unknown_name_lists_known_names(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="movielens-small") as excinfo:
        download_dataset("movielens-huge", dest=tmp_path)
    assert "movielens-huge" in str(excinfo.value)
    assert list(tmp_path.iterdir()) == []


def test_non_positive_timeout_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="timeout"):
        download_dataset(dest=tmp_path, timeout=0)
