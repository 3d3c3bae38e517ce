"""Checked downloads: fetch a file through pooch, resume a cut transfer, verify sha256, unpack safely.

This module knows nothing of images or of the kit's datasets (those are in :mod:`hvq.data`, which
uses it). It adds to `pooch <https://www.fatiando.org/pooch>`_ what pooch does not do:

* **resume**: pooch streams each attempt into a fresh temporary file and deletes it on failure.
  :class:`ResumingDownloader` keeps the bytes in a stable ``<dest>.part`` instead, asks for the rest
  with an HTTP ``Range`` request, and hands the file to pooch only once it is complete, so that pooch
  checksums complete files only;
* **the kit's checksum files** in ``sha256sum`` format (:func:`read_sha256sums`, :class:`DatasetSpec`);
* **archive safety**: every member is checked before anything is unpacked (:func:`extract_archive`);
* **one-line errors** (:class:`DownloadError`, :class:`ChecksumError`, :class:`ArchiveError`) that
  say, when the network fails, where to put the file by hand.

pooch does the rest: the transfer (:class:`pooch.HTTPDownloader`: requests, timeout, progress bar),
the sha256 check before a file gets its final name (``known_hash="sha256:..."``), retries, and the
unpacking itself (:class:`pooch.Unzip`, :class:`pooch.Untar`).
"""

from __future__ import annotations

import os
import re
import tarfile
import warnings
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Protocol
from urllib.parse import urlsplit

import pooch
import requests

PathLike = str | os.PathLike[str]

#: Seconds to wait for a connection, and for each read of a download (not for the whole transfer).
DEFAULT_TIMEOUT_S = 20.0
#: Further attempts after a network failure or a checksum mismatch; each resumes the ``.part`` file.
#: pooch waits 1 s before the first retry, 2 s before the second.
DEFAULT_RETRIES = 2

#: Bytes per read. A cut transfer keeps every whole read; urllib3 drops the last, partial one.
_CHUNK = 1 << 16
_USER_AGENT = f"hvq (pooch/{pooch.__version__})"
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")


class DownloadError(OSError):
    """A download did not complete: host unreachable, HTTP error, cut transfer, or no known checksum."""


class ChecksumError(ValueError):
    """A file's sha256 differs from the recorded one."""


class ArchiveError(ValueError):
    """An archive holds a member that would land outside the target folder, a link, or a device."""


class ProgressBar(Protocol):
    """What :class:`pooch.HTTPDownloader` calls on a progress bar (``tqdm`` has all of it)."""

    total: int

    def update(self, n: int) -> object: ...

    def reset(self) -> object: ...

    def close(self) -> object: ...


# ------------------------------------------------------------------------------------------ checksums


def read_sha256sums(path: PathLike) -> dict[str, str]:
    """Parse a file in ``sha256sum`` format (``<hex>  <name>`` per line) into ``{name: hex}``."""
    sums: dict[str, str] = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        match = re.fullmatch(r"([0-9a-fA-F]{64}) [ *](.+)", line.strip())
        if match is None:
            raise ValueError(f"{path}:{number}: not a sha256sum line: {line!r}")
        sums[match.group(2)] = match.group(1).lower()
    return sums


def verify_sha256(path: PathLike, sha256: str) -> None:
    """Raise :class:`ChecksumError` (naming the file) unless ``path`` has the given sha256."""
    digest = pooch.file_hash(str(path), alg="sha256")
    if digest != sha256.lower():
        raise ChecksumError(f"{path}: sha256 is {digest}, expected {sha256.lower()}")


def verify_checksums(directory: PathLike, checksums: Mapping[str, str]) -> None:
    """Check every ``name`` in ``checksums`` inside ``directory``; one :class:`ChecksumError` for all."""
    bad = []
    for name, sha256 in checksums.items():
        try:
            verify_sha256(Path(directory) / name, sha256)
        except ChecksumError as error:
            bad.append(str(error))
    if bad:
        raise ChecksumError("files differ from their recorded sha256: " + "; ".join(bad))


# -------------------------------------------------------------------------------------------- download


def _by_hand(url: str, dest: Path) -> str:
    return (
        f"If this machine is offline, download {url} elsewhere and put it at {dest} "
        "(the data directory is $HVQ_DATA_DIR; see data/README.md)."
    )


def _root_cause(error: BaseException) -> BaseException:
    """The innermost exception of a chain (requests wraps e.g. ``[Errno 111] Connection refused``)."""
    while (inner := error.__cause__ or error.__context__) is not None:
        error = inner
    return error


class ResumingDownloader:
    """A pooch downloader that keeps a cut transfer in ``<dest>.part`` and continues it next time.

    Called by pooch as ``downloader(url, output_file, pooch)``. The bytes go to :attr:`part`; when it
    exists from an earlier attempt (or an earlier run), only the missing bytes are requested with
    ``Range: bytes=<size>-``. The transfer is :class:`pooch.HTTPDownloader`'s, writing into the open
    ``.part``; a requests response hook sees each reply before its body: ``200`` (Range ignored, or
    a fresh start) empties the ``.part`` first, ``206`` must start at the requested offset. Once all
    announced bytes are there, the ``.part`` is moved onto ``output_file`` and pooch checks its sha256.

    A transfer that ends early raises a requests error (pooch retries it, resuming) and keeps the
    ``.part``, less the last partial read of up to 64 KiB that urllib3 drops when it raises. An HTTP
    4xx raises :class:`DownloadError` at once (no retry).

    Args:
        dest: the final path of the file; it names the ``.part`` and the by-hand message.
        timeout: seconds for the connection and for each read.
        progressbar: ``True`` for a ``tqdm`` bar on stderr, or an object with ``total``, ``update``,
            ``reset`` and ``close`` (:class:`ProgressBar`).
    """

    def __init__(self, dest: Path, *, timeout: float, progressbar: bool | ProgressBar = False) -> None:
        self.dest = dest
        self.part = dest.with_name(dest.name + ".part")
        self.timeout = timeout
        self.progressbar = progressbar
        #: Size of the whole file as the last reply announced it (``None`` until one did).
        self.expected_size: int | None = None

    def __call__(self, url: str, output_file: str, pooch_instance: pooch.Pooch | None) -> None:
        """Complete :attr:`part` from ``url``, then move it onto pooch's ``output_file``."""
        self.complete_part(url)
        os.replace(self.part, output_file)

    def complete_part(self, url: str) -> None:
        """Bring :attr:`part` to the whole file (one request); raise if the transfer ends early."""
        offset = self.part.stat().st_size if self.part.exists() else 0
        try:
            self._request(url, offset)
            size = self.part.stat().st_size
            if self.expected_size is not None and size < self.expected_size:
                # urllib3 2 raises this itself when a body ends early; urllib3 1 returns quietly.
                raise requests.exceptions.ChunkedEncodingError(f"{size} of {self.expected_size} bytes")
        except BaseException:
            if self.part.exists() and self.part.stat().st_size == 0:  # nothing arrived: no empty .part
                self.part.unlink()
            raise

    def _request(self, url: str, offset: int) -> None:
        """One GET through :class:`pooch.HTTPDownloader`, appending to :attr:`part` from ``offset``."""
        headers = {"User-Agent": _USER_AGENT}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        with open(self.part, "ab") as file:

            def start_body(response: requests.Response, **_: object) -> None:
                if response.status_code == 200:  # the whole file follows: drop what the .part held
                    file.truncate(0)
                    length = response.headers.get("Content-Length", "")
                    self.expected_size = int(length) if length.isdigit() else None
                elif response.status_code == 206:
                    self.expected_size = self._resumed_size(response, offset)

            transfer = pooch.HTTPDownloader(
                progressbar=self.progressbar,
                chunk_size=_CHUNK,
                timeout=self.timeout,
                headers=headers,
                hooks={"response": start_body},
            )
            try:
                transfer(url, file, None)
            except requests.HTTPError as error:
                status = error.response.status_code
                if status == 416 and offset:
                    return  # the .part already holds the whole file; pooch's checksum decides
                if status < 500:
                    raise self.failure(url, error) from error
                raise

    def _resumed_size(self, response: requests.Response, offset: int) -> int | None:
        """The whole file's size from a 206 reply, which must continue at ``offset``."""
        content_range = response.headers.get("Content-Range", "")
        match = _CONTENT_RANGE.fullmatch(content_range)
        if match is None or int(match.group(1)) != offset:
            raise DownloadError(
                f"server answered Range bytes={offset}- with Content-Range {content_range!r}; "
                f"delete {self.part} and try again"
            )
        return None if match.group(3) == "*" else int(match.group(3))

    def failure(self, url: str, error: requests.RequestException) -> DownloadError:
        """A one-line :class:`DownloadError` for ``error``: what failed, how to resume, what to do by hand."""
        done = self.part.stat().st_size if self.part.exists() else 0
        if isinstance(error, requests.HTTPError):
            what = f"{url}: HTTP {error.response.status_code} {error.response.reason}."
        elif self.expected_size is not None and done < self.expected_size:
            what = f"download of {url} was cut after {done} of {self.expected_size} bytes."
        else:
            what = f"download of {url} failed ({_root_cause(error)})."
        resume = f" Run again to resume from {self.part}." if done else ""
        return DownloadError(f"{what}{resume} {_by_hand(url, self.dest)}")


@contextmanager
def _network_errors(url: str, downloader: ResumingDownloader) -> Iterator[None]:
    """Turn a requests error (after pooch's retries) into the one-line :class:`DownloadError`."""
    try:
        yield
    except requests.RequestException as error:
        raise downloader.failure(url, error) from error


def download_file(
    url: str,
    dest: PathLike,
    sha256: str | None,
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
    retries: int = DEFAULT_RETRIES,
    allow_unverified: bool = False,
    progressbar: bool | ProgressBar = False,
) -> Path:
    """Download ``url`` to ``dest`` through pooch, resuming a cut download and checking its sha256.

    The bytes go to ``dest + ".part"`` (:class:`ResumingDownloader`), which a later attempt continues
    with an HTTP ``Range`` request. pooch (``pooch.create(..., retry_if_failed=retries)``) retries a
    network failure, a cut transfer (resuming) or a checksum mismatch (from scratch) up to ``retries``
    times, waiting 1 s, then 2 s; it gives the file its final name only once the sha256 matches.

    When ``sha256`` is ``None`` (no checksum is known), the download (one attempt) is not accepted unless
    ``allow_unverified`` is true: the ``.part`` is kept and the error message gives its sha256. With
    ``allow_unverified`` a :class:`UserWarning` gives the sha256, so it can be recorded in a SHA256SUMS
    file.

    An existing ``dest`` is not downloaded again; it is checked against ``sha256`` when one is given.

    Raises:
        DownloadError: the host is unreachable, an HTTP error, a cut transfer (the ``.part`` is kept for
            the next call to resume, and nothing is checksummed), or ``sha256`` is None without
            ``allow_unverified``. The message says where to put the file by hand.
        ChecksumError: the downloaded bytes have another sha256 (they are deleted), or an existing
            ``dest`` does (it is left alone).
    """
    dest = Path(dest)
    existed = dest.exists()
    dest.parent.mkdir(parents=True, exist_ok=True)
    downloader = ResumingDownloader(dest, timeout=timeout, progressbar=progressbar)
    if sha256 is None and not allow_unverified and not existed:
        with _network_errors(url, downloader):
            downloader.complete_part(url)
        raise DownloadError(
            f"{url}: no sha256 is recorded for {dest.name}; the download {downloader.part} has sha256 "
            f"{pooch.file_hash(str(downloader.part))}. Check it against a trusted source, then accept it "
            "with allow_unverified=True (CLI: --allow-unverified)."
        )
    known_hash = None if sha256 is None else f"sha256:{sha256.lower()}"
    registry = pooch.create(
        path=dest.parent,
        base_url="",
        registry={dest.name: known_hash},
        urls={dest.name: url},
        retry_if_failed=retries,
        allow_updates=False,  # a file in place with another sha256 is refused, not replaced
    )
    try:
        with _network_errors(url, downloader):
            registry.fetch(dest.name, downloader=downloader)
    except ValueError as error:  # pooch: the sha256 differs (a requests ValueError is a DownloadError now)
        if existed:
            raise ChecksumError(
                f"{dest}: sha256 is {pooch.file_hash(str(dest))}, expected {known_hash}; left in place "
                "(delete it to download again)"
            ) from error
        raise ChecksumError(f"{url}: {error}") from error
    if sha256 is None and not existed:
        digest = pooch.file_hash(str(dest))
        warnings.warn(f"{dest} accepted unverified; record its sha256: {digest}", UserWarning, stacklevel=2)
    return dest


# ------------------------------------------------------------------------------------------- archives


def _unpacker(path: Path, dest: Path) -> pooch.Unzip | pooch.Untar:
    """pooch's processor that unpacks ``path`` (a zip or tar file) into the absolute folder ``dest``."""
    name = path.name.lower()
    if name.endswith(".zip"):
        return pooch.Unzip(extract_dir=str(dest))
    if name.endswith(_TAR_SUFFIXES):
        return pooch.Untar(extract_dir=str(dest))
    raise ArchiveError(f"{path}: unknown archive type (expected .zip or .tar[.gz|.bz2|.xz])")


def _check_member(dest: Path, name: str, archive: Path) -> None:
    """Raise :class:`ArchiveError` unless member ``name`` would be extracted inside ``dest``."""
    target = (dest / name).resolve()
    if target != dest and not target.is_relative_to(dest):
        raise ArchiveError(f"{archive}: member {name!r} would be written outside {dest}")


def check_archive(path: PathLike, dest: PathLike) -> None:
    """Raise :class:`ArchiveError` unless every member of ``path`` would land inside ``dest``.

    Refused: absolute names, names with ``..`` that climb out, and (in tar files) links, devices and
    other special members. Nothing is written.
    """
    path, root = Path(path), Path(dest).resolve()
    if path.name.lower().endswith(".zip"):
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                _check_member(root, member, path)
        return
    with tarfile.open(path, "r:*") as archive:
        for info in archive.getmembers():
            if not (info.isfile() or info.isdir()):
                raise ArchiveError(f"{path}: refusing link or special member {info.name!r}")
            _check_member(root, info.name, path)


def extract_archive(path: PathLike, dest: PathLike) -> Path:
    """Unpack a ``.zip`` or ``.tar`` (``.tar.gz``, ``.tgz``, ``.tar.bz2``, ``.tar.xz``) into ``dest``.

    Every member is checked first (:func:`check_archive`), so an unsafe archive writes nothing; then
    pooch's :class:`pooch.Unzip` or :class:`pooch.Untar` unpacks it. Returns ``dest``.

    Raises:
        ArchiveError: an unknown archive type, or an unsafe member.
    """
    path, dest = Path(path), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    unpack = _unpacker(path, dest.resolve())
    check_archive(path, dest)
    unpack(str(path), "download", None)
    return dest


# ------------------------------------------------------------------------------------------- datasets


@dataclass(frozen=True)
class DatasetSpec:
    """A set of files that :func:`download_into` fetches into one folder.

    Attributes:
        urls: one URL per file; each file is saved under the last part of its URL's path.
        checksums: a ``sha256sum``-format file listing each file's sha256, or ``None`` when no checksum
            is known; then every file's sha256 is ``None`` and downloads need ``allow_unverified``.
        extract: unpack each downloaded file as an archive into the folder, then delete it.
        source: where the data come from and on what terms.
    """

    urls: tuple[str, ...]
    checksums: Path | None
    extract: bool = False
    source: str = ""

    def files(self) -> list[tuple[str, str, str | None]]:
        """``(url, file name, sha256 or None)`` for each file, in order."""
        names = [PurePosixPath(urlsplit(url).path).name for url in self.urls]
        if self.checksums is None:
            return [(url, name, None) for url, name in zip(self.urls, names, strict=True)]
        if not self.checksums.is_file():
            raise FileNotFoundError(f"{self.checksums}: checksum file missing (it ships with the repository)")
        sums = read_sha256sums(self.checksums)
        unlisted = [name for name in names if name not in sums]
        if unlisted:
            raise ValueError(f"{self.checksums}: no sha256 for {', '.join(unlisted)}")
        return [(url, name, sums[name]) for url, name in zip(self.urls, names, strict=True)]


def download_into(
    spec: DatasetSpec,
    root: PathLike,
    *,
    allow_unverified: bool = False,
    timeout: float = DEFAULT_TIMEOUT_S,
    retries: int = DEFAULT_RETRIES,
    progressbar: bool | ProgressBar = False,
) -> Path:
    """Fetch every file of ``spec`` into ``root`` (:func:`download_file`); returns ``root``.

    Files already present are checked, not fetched again. With ``spec.extract``, each archive is
    checked and unpacked into ``root`` (:func:`extract_archive`), marked done with a
    ``.<archive>.extracted`` file, and deleted; a marked archive is not fetched again.
    """
    root = Path(root)
    for url, filename, sha256 in spec.files():
        marker = root / f".{filename}.extracted"
        if spec.extract and marker.exists():
            continue
        path = download_file(
            url,
            root / filename,
            sha256,
            timeout=timeout,
            retries=retries,
            allow_unverified=allow_unverified,
            progressbar=progressbar,
        )
        if spec.extract:
            extract_archive(path, root)
            marker.write_text(f"{url}\n")
            path.unlink()
    return root
