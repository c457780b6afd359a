"""Downloads (brainsnn data fetch) against a local HTTP server on 127.0.0.1: good, corrupted,
interrupted and resumed transfers; no connection leaves the machine."""
import gzip
import hashlib
import http.server
import io
import re
import socket
import tarfile
import threading

import numpy as np
import pytest

from brainsnn import cli
from brainsnn.io import datasets, download
from brainsnn.io.datasets import load_cifar10, load_mnist
from brainsnn.io.download import DownloadError, RemoteFile, Source, fetch

CIFAR_TAR = "cifar-10-binary.tar.gz"


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.files`` (name -> bytes) with HTTP Range support. ``server.faults[name]``:
    "corrupt" flips one byte of every answer, "cut" closes the connection half-way through
    the next answer (once), "no-range" ignores Range headers."""

    def do_GET(self):
        srv, name = self.server, self.path.lstrip("/")
        srv.requests.append((name, self.headers.get("Range")))
        data = srv.files.get(name)
        if data is None:
            self.send_error(404, "no such file")
            return
        fault = srv.faults.get(name)
        start, wanted = 0, self.headers.get("Range")
        if wanted and fault != "no-range":
            start = int(re.fullmatch(r"bytes=(\d+)-", wanted).group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        if fault == "corrupt":
            mid = len(body) // 2
            body = body[:mid] + bytes([body[mid] ^ 0xFF]) + body[mid + 1:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if fault == "cut":
            del srv.faults[name]
            body = body[:len(body) // 2]
        self.wfile.write(body)
        srv.sent.append((name, len(body)))

    def log_message(self, *args):
        pass


@pytest.fixture
def only_loopback(monkeypatch):
    """Every connection goes to 127.0.0.1 (anything else fails the test); no proxy."""
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    real, hosts = socket.create_connection, []

    def guarded(address, *args, **kwargs):
        hosts.append(address[0])
        if address[0] != "127.0.0.1":
            raise AssertionError(f"a connection to {address} was attempted")
        return real(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", guarded)
    return hosts


@pytest.fixture
def server(only_loopback):
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    srv.files, srv.faults, srv.requests, srv.sent = {}, {}, [], []
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}/"
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    assert set(only_loopback) <= {"127.0.0.1"}


@pytest.fixture(autouse=True)
def fresh_memory():
    datasets._MEMORY.clear()
    yield
    datasets._MEMORY.clear()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def synthetic_cifar_tar(seed=0, per_batch=20):
    """A CIFAR-10 binary tarball (official member names) of random records, and its arrays."""
    r = np.random.default_rng(seed)
    buf, arrays = io.BytesIO(), {}
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            x = r.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
            y = r.integers(0, 10, size=per_batch, dtype=np.uint8)
            data = np.concatenate([y[:, None], x], axis=1).tobytes()
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}.bin")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
            arrays[name] = (x.reshape(-1, 3, 32, 32), y)
    return buf.getvalue(), arrays


@pytest.fixture
def cifar_served(server, monkeypatch):
    """The synthetic tarball served as the only CIFAR-10 file, with its MD5 as the official one."""
    data, arrays = synthetic_cifar_tar()
    server.files[CIFAR_TAR] = data
    monkeypatch.setitem(download.SOURCES, "cifar10",
                        Source((server.url,), (RemoteFile(CIFAR_TAR, md5(data)),)))
    return data, arrays


def test_official_sources_are_complete():
    assert set(download.SOURCES) == set(datasets.DATASETS)
    for name, source in download.SOURCES.items():
        assert source.mirrors and all(m.startswith(("http://", "https://")) for m in source.mirrors)
        for remote in source.files:
            assert re.fullmatch(r"[0-9a-f]{32}", remote.md5)
    assert [f.name for f in download.SOURCES["cifar10"].files] == [CIFAR_TAR]


def test_mnist_download_is_verified_and_readable(server, data_dir, tmp_path, monkeypatch):
    """The four IDX files of the shared copy, served locally; their MD5 stands in for the
    official one (the shared copy is recompressed, so its bytes differ from the official)."""
    shared = data_dir / "mnist"
    names = [f.name for f in download.SOURCES["mnist"].files]
    if not all((shared / n).is_file() for n in names):
        pytest.skip(f"the four MNIST .gz files are not in {shared}")
    server.files = {n: (shared / n).read_bytes() for n in names}
    monkeypatch.setitem(download.SOURCES, "mnist", Source(
        ("http://192.0.2.1/never-used/",),
        tuple(RemoteFile(n, md5(d)) for n, d in server.files.items())))
    lines = []
    paths = fetch("mnist", data_dir=tmp_path, mirror=server.url, progress=False,
                  report=lines.append)
    assert paths == [tmp_path / "mnist" / n for n in names]
    assert sorted(p.name for p in (tmp_path / "mnist").iterdir()) == sorted(names)   # no .part
    for n in names:
        assert (tmp_path / "mnist" / n).read_bytes() == server.files[n]
    x, y = load_mnist("test", data_dir=tmp_path)
    ex, ey = load_mnist("test", data_dir=data_dir)
    np.testing.assert_array_equal(x, ex)
    np.testing.assert_array_equal(y, ey)
    assert sum("MD5 verified" in line for line in lines) == 4
    # a second fetch finds every file verified in place and downloads nothing
    before = len(server.requests)
    fetch("mnist", data_dir=tmp_path, mirror=server.url, progress=False)
    assert len(server.requests) == before


def test_cifar_fetch_through_the_cli(server, cifar_served, tmp_path, capsys):
    data, arrays = cifar_served
    assert cli.main(["data", "fetch", "cifar10", "--data", str(tmp_path),
                     "--mirror", server.url]) == 0
    assert (tmp_path / "cifar-10" / CIFAR_TAR).read_bytes() == data
    x, y = load_cifar10("test", data_dir=tmp_path)
    np.testing.assert_array_equal(x, arrays["test_batch"][0].astype(np.float32) / np.float32(255))
    np.testing.assert_array_equal(y, arrays["test_batch"][1])
    assert cli.main(["data", "--data", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"cifar10        found: {tmp_path / 'cifar-10' / CIFAR_TAR}" in out
    assert f"looked in: {tmp_path / 'mnist'}, {tmp_path / 'MNIST'}, {tmp_path}" in out
    assert "mnist          not found" in out and "brainsnn data fetch mnist" in out


def test_corrupted_transfer_leaves_nothing(server, cifar_served, tmp_path):
    server.faults[CIFAR_TAR] = "corrupt"
    with pytest.raises(DownloadError, match="has MD5 .* expected") as err:
        fetch("cifar10", data_dir=tmp_path, progress=False)
    assert server.url + CIFAR_TAR in str(err.value)
    assert list((tmp_path / "cifar-10").iterdir()) == []          # neither the file nor .part


def test_interrupted_transfer_resumes_with_range(server, cifar_served, tmp_path):
    data, _ = cifar_served
    server.faults[CIFAR_TAR] = "cut"
    dest = tmp_path / "cifar-10" / CIFAR_TAR
    part = dest.with_name(CIFAR_TAR + ".part")
    with pytest.raises(DownloadError, match="closed after .* run again to resume") as err:
        fetch("cifar10", data_dir=tmp_path, progress=False)
    assert server.url + CIFAR_TAR in str(err.value)
    half = len(data) // 2
    assert not dest.exists() and part.stat().st_size == half
    fetch("cifar10", data_dir=tmp_path, progress=False)
    assert server.requests[-1] == (CIFAR_TAR, f"bytes={half}-")
    assert server.sent[-1] == (CIFAR_TAR, len(data) - half)       # only the rest was sent
    assert dest.read_bytes() == data and not part.exists()


def test_complete_partial_file_is_verified_and_placed(server, cifar_served, tmp_path):
    data, _ = cifar_served
    (tmp_path / "cifar-10").mkdir()
    (tmp_path / "cifar-10" / (CIFAR_TAR + ".part")).write_bytes(data)
    fetch("cifar10", data_dir=tmp_path, progress=False)                 # the server answers 416
    assert (tmp_path / "cifar-10" / CIFAR_TAR).read_bytes() == data
    assert server.sent == []


def test_server_ignoring_range_restarts_from_the_first_byte(server, cifar_served, tmp_path):
    data, _ = cifar_served
    server.faults[CIFAR_TAR] = "no-range"
    (tmp_path / "cifar-10").mkdir()
    (tmp_path / "cifar-10" / (CIFAR_TAR + ".part")).write_bytes(b"stale bytes")
    fetch("cifar10", data_dir=tmp_path, progress=False)
    assert (tmp_path / "cifar-10" / CIFAR_TAR).read_bytes() == data


def test_next_mirror_after_a_failure(server, cifar_served, tmp_path, monkeypatch):
    data, _ = cifar_served
    monkeypatch.setitem(download.SOURCES, "cifar10", Source(
        (server.url + "missing/", server.url), download.SOURCES["cifar10"].files))
    fetch("cifar10", data_dir=tmp_path, progress=False)
    assert (tmp_path / "cifar-10" / CIFAR_TAR).read_bytes() == data
    assert [r[0] for r in server.requests] == ["missing/" + CIFAR_TAR, CIFAR_TAR]


def test_http_error_names_the_url(server, tmp_path, capsys):
    assert cli.main(["data", "fetch", "fashion_mnist", "--data", str(tmp_path),
                     "--mirror", server.url]) == 1
    err = capsys.readouterr().err
    assert f"{server.url}train-images-idx3-ubyte.gz failed: HTTP 404" in err
    assert not (tmp_path / "fashion-mnist" / "train-images-idx3-ubyte.gz").exists()


def test_existing_file_with_another_checksum_is_kept(server, cifar_served, tmp_path):
    dest = tmp_path / "cifar-10" / CIFAR_TAR
    dest.parent.mkdir()
    dest.write_bytes(gzip.compress(b"someone's own file"))
    with pytest.raises(DownloadError, match="exists but its MD5 is .* move it away"):
        fetch("cifar10", data_dir=tmp_path, mirror=server.url, progress=False)
    assert gzip.decompress(dest.read_bytes()) == b"someone's own file"
    assert server.requests == []


def test_official_addresses_only_without_a_mirror(only_loopback, tmp_path):
    """The guard of these tests works: without --mirror the official server is contacted
    (and refused here), so the tests above that pass never left 127.0.0.1."""
    with pytest.raises(AssertionError, match="www.cs.toronto.edu"):
        fetch("cifar10", data_dir=tmp_path, progress=False)


def test_bad_names_and_mirrors(tmp_path):
    with pytest.raises(datasets.DatasetError, match="fashion_mnist"):
        fetch("fashion", data_dir=tmp_path)
    with pytest.raises(DownloadError, match="not an http"):
        fetch("mnist", data_dir=tmp_path, mirror="ftp://example.org/")
