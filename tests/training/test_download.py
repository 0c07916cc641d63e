"""The download path, against a local HTTP server that serves a small archive in the official format."""

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from tests.conftest import write_cifar_archive
from training import download as download_module
from cae.cli import main
from training.data import load_images
from training.download import DownloadError, download


class ArchiveServer:
    """Serves `blob` at /cifar-10-python.tar.gz, honouring Range unless told not to; can cut a response short."""

    def __init__(self, blob: bytes):
        self.blob, self.ranges, self.honour_range, self.cut_after = blob, [], True, None
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                if self.path != "/cifar-10-python.tar.gz":
                    self.send_error(404)
                    return
                start = 0
                header = self.headers.get("Range")
                server.ranges.append(header)
                if header and server.honour_range:
                    start = int(header.removeprefix("bytes=").split("-")[0])
                    if start >= len(server.blob):
                        self.send_error(416)
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(server.blob) - 1}/{len(server.blob)}")
                else:
                    self.send_response(200)
                body = server.blob[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.cut_after is not None:
                    self.wfile.write(body[: server.cut_after])
                    server.cut_after = None
                    self.wfile.flush()
                    self.connection.close()  # the peer sees a short read
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/cifar-10-python.tar.gz"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def archive(tmp_path):
    path = tmp_path / "source.tar.gz"
    batches = write_cifar_archive(path, per_batch=40)
    return path.read_bytes(), batches


@pytest.fixture
def server(archive):
    s = ArchiveServer(archive[0])
    yield s
    s.close()


def md5(blob):
    return hashlib.md5(blob).hexdigest()


def test_download_verifies_and_loads(tmp_path, server, archive):
    blob, batches = archive
    path = download(server.url, tmp_path / "dl", md5(blob), progress=False)
    assert path.name == "cifar-10-python.tar.gz" and path.read_bytes() == blob
    assert not list((tmp_path / "dl").glob("*.part"))
    loaded = load_images(path)
    assert np.array_equal(loaded.images[:40], batches["data_batch_1"][b"data"].reshape(-1, 3, 32, 32))
    # A second call finds the verified file and does not fetch again.
    assert download(server.url, tmp_path / "dl", md5(blob), progress=False) == path
    assert len(server.ranges) == 1


def test_resumes_a_partial_download_with_a_range_request(tmp_path, server, archive):
    blob = archive[0]
    (tmp_path / "cifar-10-python.tar.gz.part").write_bytes(blob[:1000])
    path = download(server.url, tmp_path, md5(blob), progress=False)
    assert server.ranges == ["bytes=1000-"]
    assert path.read_bytes() == blob


def test_interrupted_download_fails_cleanly_then_resumes(tmp_path, server, archive):
    blob = archive[0]
    server.cut_after = 3000
    with pytest.raises(DownloadError, match="interrupted after 3000 bytes.*run it again to resume"):
        download(server.url, tmp_path, md5(blob), progress=False)
    assert (tmp_path / "cifar-10-python.tar.gz.part").stat().st_size == 3000
    assert not (tmp_path / "cifar-10-python.tar.gz").exists()
    path = download(server.url, tmp_path, md5(blob), progress=False)
    assert server.ranges[-1] == "bytes=3000-" and path.read_bytes() == blob


def test_server_without_range_support_restarts(tmp_path, server, archive):
    blob = archive[0]
    server.honour_range = False
    (tmp_path / "cifar-10-python.tar.gz.part").write_bytes(b"garbage that is not a prefix")
    assert download(server.url, tmp_path, md5(blob), progress=False).read_bytes() == blob


def test_wrong_checksum_fails_and_removes_the_file(tmp_path, server):
    with pytest.raises(DownloadError, match="does not match the published 0{32}"):
        download(server.url, tmp_path / "dl", "0" * 32, progress=False)
    assert list((tmp_path / "dl").iterdir()) == []


def test_http_errors_are_clear(tmp_path, server):
    with pytest.raises(DownloadError, match="HTTP 404"):
        download(server.url.replace("cifar-10", "missing"), tmp_path, "0" * 32, progress=False)


def test_cli_download_and_the_cifar10_source(tmp_path, server, archive, monkeypatch, capsys):
    blob = archive[0]
    assert main(["download", "--url", server.url, "--md5", md5(blob), "--dest", str(tmp_path), "--quiet"]) == 0
    assert capsys.readouterr().out.strip().endswith("cifar-10-python.tar.gz")
    # The `cifar10` data source downloads into the cache on first use.
    monkeypatch.setattr(download_module, "CIFAR10_URL", server.url)
    monkeypatch.setattr(download_module, "CIFAR10_MD5", md5(blob))
    assert len(load_images("cifar10")) == 6 * 40
    assert main(["download", "--url", server.url, "--md5", "1" * 32, "--dest", str(tmp_path / "x"), "--quiet"]) == 2
    assert "does not match" in capsys.readouterr().err
