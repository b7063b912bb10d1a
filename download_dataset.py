"""Download the paper's Sentinel-2 dataset (DOI 10.23729/32a321ac-9012-4f17-a849-a4e7ed6b6c8c).

Steps:

1. Ask the Metax API for the dataset record; its description names a machine-downloadable
   mirror on a line ``There is a machine-downloadable mirror of the dataset at: <URL>``.
2. Ask Metax for the dataset's file list with checksums.
3. Download every ``.zip`` in the list from ``<mirror>/<file name>`` into the temp folder,
   verify its checksum, extract it into the dataset folder and delete the zip.

Safe to interrupt and rerun: a download continues from where it stopped (an HTTP Range
request on ``<temp folder>/dataset_download/<name>.part``; a server that ignores Range makes
it start over), and a zip that was verified and extracted is recorded by a small JSON marker
in ``<dataset folder>/.download_state/``, so a rerun skips it. Delete that folder to force a
fresh download. Within a run, a failed transfer is retried and resumed the same way: one that
stalls (no bytes for ``--timeout`` seconds) or ends before the bytes it announced keeps what
arrived; one that brings more bytes than announced (Content-Length, Content-Range, the size
Metax lists) is discarded whole. A checksum mismatch deletes the corrupt download; extraction
goes through a temporary folder, so the dataset folder only ever receives complete files from
verified zips.

Usage::

    python download_dataset.py [--metax-url URL] [--dataset-folder DIR] [--temp-folder DIR]
                               [--timeout S] [--retries N] [--retry-wait S]
"""

import argparse
import hashlib
import json
import re
import shutil
import sys
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar
from urllib.parse import quote

import requests
from tqdm import tqdm

import cli
from io_utils import atomic_write_json
from paths_config import get_paths

DOI = "10.23729/32a321ac-9012-4f17-a849-a4e7ed6b6c8c"
DEFAULT_METAX_URL = "https://metax.fairdata.fi"
MIRROR_LINE = re.compile(r"There is a machine-downloadable mirror of the dataset at:\s*<?(\S+?)>?\s*$", re.MULTILINE)
STATE_FOLDER = ".download_state"  # inside the dataset folder; hidden so the conversion ignores it
DOWNLOAD_SUBFOLDER = "dataset_download"  # inside the temp folder
RETRYABLE_STATUS = {408, 429, 500, 502, 503, 504}
# Read size: a dropped connection loses the chunk being read (the HTTP client discards a short
# read), so this bounds the bytes a resume fetches twice.
CHUNK_BYTES = 1 << 16

T = TypeVar("T")


class DownloadError(cli.UserError):
    """An expected failure; ``main`` prints it as one line and exits with status 1."""


class TransientError(Exception):
    """A failure worth retrying (connection lost, timeout, HTTP 5xx)."""


@dataclass(frozen=True)
class RemoteFile:
    """One entry of the Metax file list."""

    name: str  # base name, also the name on the mirror
    algorithm: str  # as Metax spells it, e.g. "SHA-256"
    checksum: str  # lower-case hex
    size: int | None  # bytes, where Metax tells


# ---------------------------------------------------------------------------------------------
# Checksums


def _normalise_algorithm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def new_hash(algorithm: str) -> "hashlib._Hash":
    """A hashlib object for an algorithm name as Metax may spell it ("SHA-256", "sha256", "MD5")."""
    wanted = _normalise_algorithm(algorithm)
    # Guaranteed names first, so a spelling never resolves to a platform-specific variant.
    for name in sorted(hashlib.algorithms_guaranteed) + sorted(hashlib.algorithms_available):
        if _normalise_algorithm(name) == wanted and not name.startswith("shake"):
            return hashlib.new(name)
    raise DownloadError(f"unsupported checksum algorithm {algorithm!r}")


def file_digest(path: Path, algorithm: str) -> str:
    """Hex digest of the file at ``path`` (``algorithm`` as :func:`new_hash` takes it)."""
    with open(path, "rb") as file:
        return hashlib.file_digest(file, lambda: new_hash(algorithm)).hexdigest()


# ---------------------------------------------------------------------------------------------
# HTTP with retries


def with_retries(action: Callable[[], T], what: str, retries: int, retry_wait: float) -> T:
    """Run ``action``; on TransientError retry up to ``retries`` times, waiting
    ``retry_wait * 2**k`` seconds before retry k. Gives up with a DownloadError naming ``what``."""
    for attempt in range(retries + 1):
        try:
            return action()
        except TransientError as error:
            if attempt == retries:
                tries = "1 attempt" if retries == 0 else f"{retries + 1} attempts"
                raise DownloadError(f"{what} failed after {tries}: {error}; rerun to continue") from None
            wait = retry_wait * 2**attempt
            print(f"{what}: {error}; retrying in {wait:g} s", file=sys.stderr)
            time.sleep(wait)
    raise AssertionError("unreachable")


def _check_status(response: requests.Response, what: str) -> None:
    """Raise TransientError for retryable HTTP errors, DownloadError for the rest."""
    if response.status_code < 400:
        return
    message = f"HTTP {response.status_code} {response.reason} for {response.url}"
    if response.status_code in RETRYABLE_STATUS:
        raise TransientError(message)
    raise DownloadError(f"{what}: {message}")


def get_json(
    session: requests.Session, url: str, params: dict | None, what: str, timeout: float, retries: int, retry_wait: float
) -> Any:
    """GET ``url`` and parse JSON, with retries for transient failures."""

    def attempt() -> Any:
        try:
            response = session.get(url, params=params, timeout=timeout)
        except (requests.ConnectionError, requests.Timeout) as error:
            raise TransientError(f"{type(error).__name__}: {error}") from None
        _check_status(response, what)
        try:
            return response.json()
        except ValueError:
            raise DownloadError(f"{what}: {response.url} did not return JSON") from None

    return with_retries(attempt, what, retries, retry_wait)


# ---------------------------------------------------------------------------------------------
# Metax


def find_dataset(metax_url: str, session: requests.Session, **http: Any) -> tuple[str, str]:
    """Look up the DOI in Metax; return (Metax identifier, mirror base URL)."""
    url = f"{metax_url.rstrip('/')}/rest/v2/datasets"
    record = get_json(session, url, {"preferred_identifier": f"doi:{DOI}"}, "Metax dataset look-up", **http)
    # The look-up answers with the record itself; tolerate a list or a paged result too.
    if isinstance(record, dict) and isinstance(record.get("results"), list):
        record = record["results"]
    if isinstance(record, list):
        record = record[0] if record else None
    if not isinstance(record, dict) or not isinstance(record.get("identifier"), str):
        raise DownloadError(f"Metax dataset look-up: no dataset record with an identifier for doi:{DOI}")
    research_dataset = record.get("research_dataset")
    descriptions = research_dataset.get("description", {}) if isinstance(research_dataset, dict) else {}
    if isinstance(descriptions, str):
        descriptions = {"und": descriptions}
    # English first, then any other language version.
    texts = sorted(descriptions.items(), key=lambda item: item[0] != "en") if isinstance(descriptions, dict) else []
    for _, text in texts:
        match = MIRROR_LINE.search(str(text))
        if match:
            return record["identifier"], match.group(1).rstrip(".,")
    raise DownloadError("Metax dataset look-up: the dataset description names no machine-downloadable mirror")


def list_zip_files(metax_url: str, identifier: str, session: requests.Session, **http: Any) -> list[RemoteFile]:
    """The dataset's .zip files with their checksums, from Metax."""
    url = f"{metax_url.rstrip('/')}/rest/v2/datasets/{quote(identifier)}/files"
    entries = get_json(session, url, None, "Metax file list", **http)
    if isinstance(entries, dict) and isinstance(entries.get("results"), list):
        entries = entries["results"]
    if not isinstance(entries, list):
        raise DownloadError("Metax file list: expected a list of files")
    files = []
    for entry in entries:
        try:
            name = PurePosixPath(entry["file_path"]).name
            algorithm = str(entry["checksum"]["algorithm"])
            checksum = str(entry["checksum"]["value"]).strip().lower()
        except (KeyError, TypeError):
            raise DownloadError(f"Metax file list: malformed entry {entry!r:.200}") from None
        if not name.lower().endswith(".zip"):
            continue  # the mirror serves the zips; other files (if any) are not needed
        if "\\" in name:
            raise DownloadError(f"Metax file list: unusable file name {name!r}")
        new_hash(algorithm)  # fail before downloading anything if we could not verify it
        size = entry.get("byte_size")
        files.append(RemoteFile(name, algorithm, checksum, size if isinstance(size, int) else None))
    if not files:
        raise DownloadError("Metax file list: the dataset lists no .zip files")
    return sorted(files, key=lambda file: file.name)


# ---------------------------------------------------------------------------------------------
# Resumable download


def _content_range_total(response: requests.Response) -> int | None:
    """The total size from a ``Content-Range: bytes a-b/total`` header, if given."""
    match = re.match(r"bytes\s+(?:\*|\d+-\d+)/(\d+)", response.headers.get("Content-Range", ""))
    return int(match.group(1)) if match else None


def _announced_body_size(
    response: requests.Response, offset: int, expected_size: int | None
) -> tuple[int | None, bool]:
    """``(limit, exact)``: how many body bytes a response for the file from ``offset`` on may
    carry. ``exact`` when the server announced the number (Content-Length, the span of a
    Content-Range); else ``limit`` is what the listed file size leaves (or None when nothing is
    known). Announcements that contradict each other or the listed size are a TransientError:
    the response is not used."""
    announced = {}
    length = response.headers.get("Content-Length")
    if length is not None:
        if not length.strip().isdigit():
            raise TransientError(f"unusable Content-Length {length!r}")
        announced["Content-Length"] = int(length)
    if response.status_code == 206:
        match = re.fullmatch(r"bytes\s+(\d+)-(\d+)/(\d+|\*)", response.headers.get("Content-Range", "").strip())
        if not match or int(match.group(2)) < int(match.group(1)):
            raise TransientError(f"unusable Content-Range {response.headers.get('Content-Range')!r}")
        announced["Content-Range"] = int(match.group(2)) - int(match.group(1)) + 1
        total = match.group(3)
        if expected_size is not None and total != "*" and int(total) != expected_size:
            raise TransientError(f"the server gives the file size as {total} bytes, Metax as {expected_size}")
    if len(set(announced.values())) > 1:
        raise TransientError(
            "the server's Content-Length and Content-Range disagree "
            f"({announced['Content-Length']} and {announced['Content-Range']} bytes)"
        )
    remaining = None if expected_size is None else expected_size - offset
    if announced:
        size = next(iter(announced.values()))
        if remaining is not None and size > remaining:
            raise TransientError(
                f"the server announces {size} bytes from byte {offset} on, but the file has {expected_size} bytes"
            )
        return size, True
    return remaining, False


def _download_once(
    session: requests.Session, url: str, part: Path, expected_size: int | None, timeout: float, label: str
) -> None:
    """One attempt to complete ``part`` from ``url``, resuming from its current size.

    ``timeout`` bounds the wait for the connection and for every read, so a transfer that
    stalls (no bytes for ``timeout`` seconds) fails and is resumed by the next attempt. A
    response that ends before the bytes it announced keeps what arrived (the next attempt
    resumes after it); one that brings more bytes than it announced (or than the file has) is
    not trusted at all: its bytes are removed again and the next attempt resumes from where
    this one started.
    """
    offset = part.stat().st_size if part.exists() else 0
    if expected_size is not None and offset > expected_size:
        part.unlink()  # longer than the real file: cannot be a prefix of it
        offset = 0
    if expected_size is not None and offset == expected_size:
        return  # complete already (interrupted between download and verification)
    # identity: Range offsets must count the bytes as stored, not as decompressed.
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        with session.get(url, headers=headers, stream=True, timeout=timeout) as response:
            if response.status_code == 416 and offset:
                if _content_range_total(response) == offset:
                    return  # the part file already holds the whole file
                print(f"{label}: the server refused the resume point; starting the file over", file=sys.stderr)
                part.unlink()
                return _download_once(session, url, part, expected_size, timeout, label)
            _check_status(response, f"download of {label}")
            if response.status_code == 206:
                start = re.match(r"bytes\s+(\d+)-", response.headers.get("Content-Range", ""))
                if not start or int(start.group(1)) != offset:
                    print(f"{label}: the server resumed at the wrong position; starting the file over", file=sys.stderr)
                    part.unlink()
                    return _download_once(session, url, part, expected_size, timeout, label)
                mode = "ab"
            else:
                if offset:
                    print(f"{label}: the server does not resume downloads; starting the file over", file=sys.stderr)
                offset, mode = 0, "wb"
            limit, exact = _announced_body_size(response, offset, expected_size)
            received = 0
            with (
                open(part, mode) as file,
                tqdm(
                    total=None if limit is None else offset + limit,
                    initial=offset,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    desc=label,
                    mininterval=1.0,
                ) as bar,
            ):
                for chunk in response.iter_content(CHUNK_BYTES):
                    received += len(chunk)
                    if limit is not None and received > limit:
                        # Which of the bytes are wrong is unknown: drop all of this response.
                        file.truncate(offset)
                        announced = "announced" if exact else "the file has left"
                        raise TransientError(
                            f"the server sent more than the {limit} bytes {announced}; "
                            "the bytes of this response were discarded"
                        )
                    file.write(chunk)
                    bar.update(len(chunk))
    except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as error:
        # A read timeout (a stalled transfer) arrives here as a ConnectionError.
        raise TransientError(f"transfer interrupted ({type(error).__name__})") from None
    if limit is not None and received < limit:
        raise TransientError(f"transfer incomplete ({offset + received} of {offset + limit} bytes)")
    # A server may answer an open-ended Range with a shorter range: the next attempt continues.
    file_size = expected_size if expected_size is not None else _content_range_total(response)
    if file_size is not None and offset + received < file_size:
        raise TransientError(f"the server sent bytes up to {offset + received} of {file_size}")


def download_resumable(
    session: requests.Session,
    url: str,
    part: Path,
    expected_size: int | None,
    label: str,
    timeout: float,
    retries: int,
    retry_wait: float,
) -> None:
    """Make ``part`` a complete copy of ``url``, resuming across attempts and across runs."""
    part.parent.mkdir(parents=True, exist_ok=True)
    with_retries(
        lambda: _download_once(session, url, part, expected_size, timeout, label),
        f"download of {label}",
        retries,
        retry_wait,
    )


# ---------------------------------------------------------------------------------------------
# Extraction


def extract_zip(zip_path: Path, dataset_folder: Path, label: str) -> list[str]:
    """Extract ``zip_path`` into ``dataset_folder``; return the extracted relative paths.

    Files are unpacked into a hidden staging folder inside ``dataset_folder`` (same file
    system) and then each is renamed into place, so a file in the dataset folder is always
    complete. Entries that would land outside the folder are refused.
    """
    staging = dataset_folder / f".extracting-{zip_path.stem}"
    shutil.rmtree(staging, ignore_errors=True)  # left by an interrupted run
    staging.mkdir(parents=True)
    try:
        try:
            with zipfile.ZipFile(zip_path) as archive:
                members = [info for info in archive.infolist() if not info.is_dir()]
                for info in members:
                    parts = PurePosixPath(info.filename.replace("\\", "/")).parts
                    if not parts or parts[0] == "/" or ".." in parts or ":" in parts[0]:
                        raise DownloadError(f"{label}: refusing unsafe path {info.filename!r} in the zip")
                archive.extractall(staging, members)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as error:
            raise DownloadError(f"{label}: the zip passed its checksum but cannot be read ({error})") from None
        extracted = []
        for source in sorted(path for path in staging.rglob("*") if path.is_file()):
            relative = source.relative_to(staging)
            target = dataset_folder / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            source.replace(target)
            extracted.append(relative.as_posix())
        return extracted
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# The whole download


def _marker_path(dataset_folder: Path, file: RemoteFile) -> Path:
    return dataset_folder / STATE_FOLDER / f"{file.name}.json"


def is_done(dataset_folder: Path, file: RemoteFile) -> bool:
    """Whether a marker records this zip (same checksum) as verified and extracted."""
    try:
        marker = json.loads(_marker_path(dataset_folder, file).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(marker, dict) and marker.get("checksum") == file.checksum


def fetch_one(
    session: requests.Session, mirror: str, file: RemoteFile, dataset_folder: Path, download_folder: Path, **http: Any
) -> None:
    """Download, verify, extract and record one zip, then delete it."""
    part = download_folder / f"{file.name}.part"
    url = f"{mirror.rstrip('/')}/{quote(file.name)}"
    download_resumable(session, url, part, file.size, file.name, **http)
    actual = file_digest(part, file.algorithm)
    if actual != file.checksum:
        part.unlink()
        raise DownloadError(
            f"checksum mismatch for {file.name} ({file.algorithm} expected {file.checksum}, "
            f"got {actual}); the corrupt download was deleted"
        )
    extracted = extract_zip(part, dataset_folder, file.name)
    atomic_write_json(
        _marker_path(dataset_folder, file),
        {"file": file.name, "algorithm": file.algorithm, "checksum": file.checksum, "extracted": extracted},
    )
    part.unlink()
    print(f"{file.name}: verified, extracted {len(extracted)} files")


def download_dataset(
    metax_url: str,
    dataset_folder: Path,
    temp_folder: Path,
    timeout: float = 60.0,
    retries: int = 3,
    retry_wait: float = 2.0,
) -> None:
    """Every step of the module docstring; raises DownloadError on expected failures."""
    http = {"timeout": timeout, "retries": retries, "retry_wait": retry_wait}
    download_folder = temp_folder / DOWNLOAD_SUBFOLDER
    with requests.Session() as session:
        identifier, mirror = find_dataset(metax_url, session, **http)
        files = list_zip_files(metax_url, identifier, session, **http)
        print(f"dataset {identifier}: {len(files)} zip files from {mirror}")
        dataset_folder.mkdir(parents=True, exist_ok=True)
        for file in files:
            if is_done(dataset_folder, file):
                # A leftover zip from a run stopped just after its marker was written.
                (download_folder / f"{file.name}.part").unlink(missing_ok=True)
                print(f"{file.name}: already extracted, skipped")
                continue
            fetch_one(session, mirror, file, dataset_folder, download_folder, **http)
    print(f"done: the dataset is in {dataset_folder}")


def main(argv: Sequence[str] | None = None) -> int:
    paths = get_paths()
    parser = cli.ArgumentParser(prog="download_dataset.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--metax-url", default=DEFAULT_METAX_URL, help="Metax API base URL (default: %(default)s)")
    parser.add_argument(
        "--dataset-folder", default=paths["dataset_folder"], help="where the files go (default: %(default)s)"
    )
    parser.add_argument(
        "--temp-folder", default=paths["temp_folder"], help="for downloads in progress (default: %(default)s)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        help="seconds to wait for a connection or for the next bytes; a transfer silent for "
        "longer is retried from where it stopped (default: %(default)s)",
    )
    parser.add_argument(
        "--retries",
        type=cli.non_negative_int,
        default=3,
        help="retries after a transient failure (default: %(default)s)",
    )
    parser.add_argument(
        "--retry-wait",
        type=cli.non_negative_float,
        default=2.0,
        help="seconds before the first retry, doubled for each next one (default: %(default)s)",
    )

    def body(args: argparse.Namespace) -> None:
        if not 0 < args.timeout < float("inf"):
            parser.error(f"argument --timeout: expected a finite number > 0, got {args.timeout}")
        download_dataset(
            args.metax_url,
            Path(args.dataset_folder),
            Path(args.temp_folder),
            args.timeout,
            args.retries,
            args.retry_wait,
        )

    # OSError: e.g. a full disk; RequestException: e.g. a malformed --metax-url.
    return cli.run_main(
        parser,
        body,
        argv,
        statuses={OSError: 1, requests.RequestException: 1},
        interrupted="interrupted; rerun to resume",
    )


if __name__ == "__main__":
    sys.exit(main())
