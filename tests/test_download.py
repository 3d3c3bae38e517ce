"""hvq.download (and hvq.data's datasets through it): resume, checksums, offline message, safe unpacking.

Every request goes to a ThreadingHTTPServer on 127.0.0.1 started here, or to a closed local port.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import socket
import tarfile
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from PIL import Image

from hvq import data, download
from hvq.cli import main
from hvq.download import ArchiveError, ChecksumError, DatasetSpec, DownloadError


def sha256(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


@dataclass
class Server:
    """Files served at ``url + "/" + name``, with the Range header of every request recorded."""

    url: str
    files: dict[str, bytes] = field(default_factory=dict)
    ranges: list[str | None] = field(default_factory=list)
    honour_range: bool = True
    #: One entry per reply, first reply first: announce the whole Content-Length but send the body
    #: only up to this offset of the file, then close the connection.
    cuts: list[int] = field(default_factory=list)
    #: One entry per reply, first reply first: answer with this HTTP error instead of the file.
    errors: list[int] = field(default_factory=list)


def _handler(server: Server) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the http.server name)
            requested = self.headers.get("Range")
            server.ranges.append(requested)
            body = server.files.get(self.path.lstrip("/"))
            if body is None or server.errors:
                self.send_error(server.errors.pop(0) if server.errors else 404)
                return
            start = int(requested[6:-1]) if requested and server.honour_range else 0
            if start >= len(body) > 0:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206 if start else 200)
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            self.send_header("Content-Length", str(len(body) - start))
            self.end_headers()
            self.wfile.write(body[start : server.cuts.pop(0) if server.cuts else None])

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loopback requests must not go to a proxy that the environment may name."""
    for variable in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(variable, raising=False)


@pytest.fixture
def server() -> Iterator[Server]:
    state = Server(url="")
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


PAYLOAD = bytes(range(256)) * 1024  # 256 KiB: several reads of 64 KiB


@dataclass
class RecordingBar:
    """A progress bar as pooch drives one (``total``, ``update``, ``reset``, ``close``)."""

    total: int = 0
    n: int = 0
    closed: bool = False

    def update(self, step: int) -> None:
        self.n += step

    def reset(self) -> None:
        self.n = 0

    def close(self) -> None:
        self.closed = True


# ------------------------------------------------------------------------------------------ download


def test_download_verifies_and_drives_a_progress_bar(server: Server, tmp_path: Path) -> None:
    server.files["f.bin"] = PAYLOAD
    bar = RecordingBar()
    dest = download.download_file(f"{server.url}/f.bin", tmp_path / "f.bin", sha256(PAYLOAD), progressbar=bar)
    assert dest.read_bytes() == PAYLOAD and sorted(tmp_path.iterdir()) == [dest]
    assert (bar.total, bar.n, bar.closed) == (len(PAYLOAD), len(PAYLOAD), True) and server.ranges == [None]
    download.download_file(f"{server.url}/f.bin", dest, sha256(PAYLOAD))  # present and valid: no request
    assert server.ranges == [None]


def test_download_resumes_a_part_left_by_an_earlier_run(server: Server, tmp_path: Path) -> None:
    server.files["f.bin"] = PAYLOAD
    half = len(PAYLOAD) // 2
    (tmp_path / "f.bin.part").write_bytes(PAYLOAD[:half])
    dest = download.download_file(f"{server.url}/f.bin", tmp_path / "f.bin", sha256(PAYLOAD))
    assert dest.read_bytes() == PAYLOAD
    assert server.ranges == [f"bytes={half}-"]


def test_cut_transfer_keeps_the_part_through_retries_and_resumes_next_time(
    server: Server, tmp_path: Path
) -> None:
    """A body that ends before Content-Length is a cut download, not a bad checksum: the bytes stay."""
    server.files["f.bin"] = PAYLOAD
    cut = len(PAYLOAD) // 2
    server.cuts = [cut, cut]  # the retry resumes where the .part ends and is cut again at `cut`
    url, dest, part = f"{server.url}/f.bin", tmp_path / "f.bin", tmp_path / "f.bin.part"
    with pytest.raises(DownloadError) as raised:
        download.download_file(url, dest, sha256(PAYLOAD), retries=1)
    kept = part.read_bytes()  # whole reads only: urllib3 drops the last partial read
    assert 0 < len(kept) <= cut and kept == PAYLOAD[: len(kept)] and not dest.exists()
    message = str(raised.value)
    assert f"cut after {len(kept)} of {len(PAYLOAD)} bytes. Run again to resume from {part}." in message
    assert "\n" not in message and server.ranges == [None, f"bytes={len(kept)}-"]
    assert download.download_file(url, dest, sha256(PAYLOAD), retries=0).read_bytes() == PAYLOAD
    assert server.ranges[2:] == [f"bytes={len(kept)}-"] and not part.exists()


def test_a_retry_resumes_a_cut_transfer_within_one_call(server: Server, tmp_path: Path) -> None:
    server.files["f.bin"] = PAYLOAD
    server.cuts = [len(PAYLOAD) // 2]
    dest = download.download_file(f"{server.url}/f.bin", tmp_path / "f.bin", sha256(PAYLOAD), retries=1)
    assert dest.read_bytes() == PAYLOAD and server.ranges[0] is None and len(server.ranges) == 2
    resumed_at = int(server.ranges[1].removeprefix("bytes=").removesuffix("-"))
    assert 0 < resumed_at <= len(PAYLOAD) // 2


def test_a_server_error_is_retried(server: Server, tmp_path: Path) -> None:
    server.files["f.bin"] = PAYLOAD
    server.errors = [503]
    dest = download.download_file(f"{server.url}/f.bin", tmp_path / "f.bin", sha256(PAYLOAD), retries=1)
    assert dest.read_bytes() == PAYLOAD and server.ranges == [None, None]


def test_download_restarts_when_the_server_ignores_range(server: Server, tmp_path: Path) -> None:
    server.files["f.bin"] = PAYLOAD
    server.honour_range = False
    (tmp_path / "f.bin.part").write_bytes(b"stale bytes from another file")
    dest = download.download_file(f"{server.url}/f.bin", tmp_path / "f.bin", sha256(PAYLOAD))
    assert dest.read_bytes() == PAYLOAD and server.ranges == ["bytes=29-"]


def test_wrong_checksum_deletes_the_download_with_one_line(server: Server, tmp_path: Path) -> None:
    server.files["f.bin"] = PAYLOAD
    expected = f"expected sha256:{'0' * 64} but got {sha256(PAYLOAD)}"
    with pytest.raises(ChecksumError, match=expected) as raised:
        download.download_file(f"{server.url}/f.bin", tmp_path / "f.bin", "0" * 64, retries=0)
    assert "\n" not in str(raised.value) and str(raised.value).startswith(f"{server.url}/f.bin: ")
    assert list(tmp_path.iterdir()) == []  # no file, no .part, no temporary file


def test_existing_file_with_a_wrong_checksum_is_refused_and_kept(tmp_path: Path) -> None:
    (tmp_path / "f.bin").write_bytes(b"mine")
    with pytest.raises(ChecksumError, match=f"f.bin: sha256 is {sha256(b'mine')}, expected sha256:0000"):
        download.download_file("http://127.0.0.1:9/f.bin", tmp_path / "f.bin", "0" * 64)
    assert (tmp_path / "f.bin").read_bytes() == b"mine"


def test_download_without_a_known_checksum_needs_consent(server: Server, tmp_path: Path) -> None:
    server.files["f.bin"] = PAYLOAD
    url, dest = f"{server.url}/f.bin", tmp_path / "f.bin"
    with pytest.raises(DownloadError, match=sha256(PAYLOAD)):
        download.download_file(url, dest, None)
    assert not dest.exists() and (tmp_path / "f.bin.part").exists()
    with pytest.warns(UserWarning, match=f"record its sha256: {sha256(PAYLOAD)}"):
        download.download_file(url, dest, None, allow_unverified=True)  # the kept .part is complete: 416
    assert dest.read_bytes() == PAYLOAD and server.ranges == [None, f"bytes={len(PAYLOAD)}-"]


def test_http_client_error_fails_at_once(server: Server, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="HTTP 404 Not Found. If this machine is offline"):
        download.download_file(f"{server.url}/missing.bin", tmp_path / "m.bin", "0" * 64, retries=2)
    assert server.ranges == [None]  # not retried


def test_refused_connection_says_what_to_do_by_hand(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url, dest = f"http://127.0.0.1:{port}/f.bin", tmp_path / "sub" / "f.bin"
    started = time.monotonic()
    with pytest.raises(DownloadError, match="Connection refused") as raised:
        download.download_file(url, dest, "0" * 64, timeout=2, retries=0)
    assert time.monotonic() - started < 5
    message = str(raised.value)
    assert f"download {url} elsewhere and put it at {dest} " in message and "\n" not in message
    assert "resume" not in message and not dest.exists() and not (tmp_path / "sub" / "f.bin.part").exists()


def test_cli_download_failure_is_one_line(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    sums = tmp_path / "SHA256SUMS"
    sums.write_text(f"{'0' * 64}  gone.png\n")
    monkeypatch.setitem(data.DATASETS, "kodak", DatasetSpec(urls=(f"{server.url}/gone.png",), checksums=sums))
    assert main(["data", "download", "kodak", "--data-dir", str(tmp_path)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("hvq: error:")]
    assert len(errors) == 1 and "HTTP 404" in errors[0]
    assert f"put it at {tmp_path / 'kodak' / 'gone.png'} " in errors[0]


# ---------------------------------------------------------------------------------------- archives


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, payload in members.items():
            archive.writestr(name, payload)
    return buffer.getvalue()


def _tar_gz(members: dict[str, bytes], symlink: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
        if symlink is not None:
            link = tarfile.TarInfo("link")
            link.type, link.linkname = tarfile.SYMTYPE, symlink
            archive.addfile(link)
    return buffer.getvalue()


IMAGES = {"set/0001.png": b"one", "set/0002.png": b"two"}


@pytest.mark.parametrize(
    "name, archive",
    [
        ("evil.zip", _zip({"../evil.txt": b"x"})),
        ("evil.tar.gz", _tar_gz({"../evil.txt": b"x"})),
        ("abs.tar.gz", _tar_gz({"/tmp/hvq-evil.txt": b"x"})),
        ("link.tar.gz", _tar_gz({}, symlink="/etc/passwd")),
        ("late.zip", _zip({"ok.txt": b"x", "../evil.txt": b"x"})),  # checked before the first write
        ("late.tar.gz", _tar_gz({"ok.txt": b"x"}, symlink="/etc/passwd")),
        ("evil.rar", b"Rar!"),
    ],
)
def test_extract_archive_refuses_unsafe_members(tmp_path: Path, name: str, archive: bytes) -> None:
    (tmp_path / name).write_bytes(archive)
    with pytest.raises(ArchiveError, match=name):
        download.extract_archive(tmp_path / name, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists() and list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize(
    "archive_name, archive", [("set.zip", _zip(IMAGES)), ("set.tar.gz", _tar_gz(IMAGES))]
)
def test_download_dataset_extracts_an_archive(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, archive_name: str, archive: bytes
) -> None:
    server.files[archive_name] = archive
    sums = tmp_path / "SHA256SUMS"
    sums.write_text(f"{sha256(archive)}  {archive_name}\n")
    spec = DatasetSpec(urls=(f"{server.url}/{archive_name}",), checksums=sums, extract=True)
    monkeypatch.setitem(data.DATASETS, "toy", spec)
    root = data.download_dataset("toy", tmp_path / "data")
    assert root == tmp_path / "data" / "toy"
    assert {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*.png")} == IMAGES
    assert not (root / archive_name).exists() and (root / f".{archive_name}.extracted").exists()
    data.download_dataset("toy", tmp_path / "data")  # already done: no second request
    assert server.ranges == [None]


def test_downloaded_archive_that_climbs_out_is_refused(server: Server, tmp_path: Path) -> None:
    archive = _zip({"set/0001.png": b"one", "../../outside.txt": b"x"})
    server.files["set.zip"] = archive
    (tmp_path / "SHA256SUMS").write_text(f"{sha256(archive)}  set.zip\n")
    spec = DatasetSpec(urls=(f"{server.url}/set.zip",), checksums=tmp_path / "SHA256SUMS", extract=True)
    root = tmp_path / "data" / "toy"
    with pytest.raises(ArchiveError, match="'../../outside.txt' would be written outside"):
        download.download_into(spec, root)
    assert not (tmp_path / "outside.txt").exists() and not (root / "set").exists()
    assert not (root / ".set.zip.extracted").exists()


def test_kodak_download_through_the_registry(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = []
    for index, name in enumerate(data.KODAK_NAMES):
        buffer = io.BytesIO()
        Image.new("RGB", (3, 2), (index, 0, 0)).save(buffer, format="PNG")
        server.files[name] = buffer.getvalue()
        lines.append(f"{sha256(buffer.getvalue())}  {name}\n")
    (tmp_path / "SHA256SUMS").write_text("".join(lines))
    spec = DatasetSpec(
        urls=tuple(f"{server.url}/{n}" for n in data.KODAK_NAMES), checksums=tmp_path / "SHA256SUMS"
    )
    monkeypatch.setitem(data.DATASETS, "kodak", spec)
    images = data.kodak_images(tmp_path / "d", download=True)
    assert len(images) == 24 and data.load_image_uint8(images[23])[0, 0].tolist() == [23, 0, 0]
    assert data.kodak_images(tmp_path / "d") == images and len(server.ranges) == 24


def test_read_sha256sums_rejects_malformed_lines(tmp_path: Path) -> None:
    (tmp_path / "SUMS").write_text(f"# comment\n{'a' * 64} *x.png\n\nnot a line\n")
    with pytest.raises(ValueError, match=r"SUMS:4"):
        download.read_sha256sums(tmp_path / "SUMS")
