"""download_dataset.py against a local stand-in for Metax and the mirror (metax_stand_in.py)."""

import hashlib
import json
import socket
from pathlib import Path

import pytest

import download_dataset
from make_synthetic_dataset import make_synthetic_dataset, zip_files
from metax_stand_in import serve_stand_in


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # A proxy configured in the environment must not intercept requests to 127.0.0.1.
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    # Small reads, so that a cut transfer keeps most of its bytes even for these tiny zips.
    monkeypatch.setattr(download_dataset, "CHUNK_BYTES", 1000)


@pytest.fixture(scope="module")
def zips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Two zips of three tiny synthetic .nc files each, and a reference copy of those files."""
    source = tmp_path_factory.mktemp("source")
    files = make_synthetic_dataset(source, 6, size=16, seed=1, progress=False)
    return {
        "part_a.zip": zip_files(files[:3], source / "part_a.zip").read_bytes(),
        "part_b.zip": zip_files(files[3:], source / "part_b.zip").read_bytes(),
    }


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "dataset", tmp_path / "temp"


def run(stand_in, folders: tuple[Path, Path], *extra: str) -> int:
    dataset, temp = folders
    return download_dataset.main(
        [
            "--metax-url",
            stand_in.metax_url,
            "--dataset-folder",
            str(dataset),
            "--temp-folder",
            str(temp),
            "--retry-wait",
            "0",
            "--timeout",
            "5",
            *extra,
        ]
    )


def nc_files(dataset: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(dataset.rglob("*.nc"))}


def expected_nc_files(zips: dict[str, bytes], tmp_path: Path) -> dict[str, bytes]:
    """What the zips hold, unpacked independently of the code under test."""
    import zipfile

    out = {}
    for name, content in zips.items():
        (tmp_path / name).write_bytes(content)
        with zipfile.ZipFile(tmp_path / name) as archive:
            out |= {member: archive.read(member) for member in archive.namelist()}
    return dict(sorted(out.items()))


def assert_one_line_error(capsys: pytest.CaptureFixture, *fragments: str) -> None:
    err = capsys.readouterr().err
    error_lines = [line for line in err.splitlines() if line.startswith("download_dataset.py: error: ")]
    assert len(error_lines) == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in error_lines[0], error_lines[0]


def test_download_then_rerun_does_nothing(zips, folders, tmp_path, capsys):
    dataset, temp = folders
    with serve_stand_in(zips) as stand_in:
        assert run(stand_in, folders) == 0
        files = nc_files(dataset)
        assert files == expected_nc_files(zips, tmp_path)
        assert not list((temp / download_dataset.DOWNLOAD_SUBFOLDER).iterdir())  # zips deleted
        markers = sorted(p.name for p in (dataset / download_dataset.STATE_FOLDER).iterdir())
        assert markers == ["part_a.zip.json", "part_b.zip.json"]
        marker = json.loads((dataset / download_dataset.STATE_FOLDER / "part_a.zip.json").read_text())
        assert marker["checksum"] == hashlib.sha256(zips["part_a.zip"]).hexdigest()
        assert stand_in.mirror_requests("README.txt") == []  # only zips are fetched

        stand_in.log.clear()
        assert run(stand_in, folders) == 0
        assert stand_in.mirror_requests("part_a.zip") == stand_in.mirror_requests("part_b.zip") == []
        assert nc_files(dataset) == files
        # After the conversion deleted the .nc files, a rerun still downloads nothing.
        for path in dataset.glob("*.nc"):
            path.unlink()
        assert run(stand_in, folders) == 0
        assert stand_in.mirror_requests("part_a.zip") == []
    assert "already extracted" in capsys.readouterr().out


def test_checksum_mismatch_leaves_nothing_trusted(zips, folders, capsys):
    dataset, temp = folders
    with serve_stand_in(zips) as stand_in:
        stand_in.checksums["part_b.zip"] = "0" * 64
        assert run(stand_in, folders) == 1
        assert_one_line_error(capsys, "checksum mismatch", "part_b.zip")
        # part_a was fine and is kept; nothing of part_b exists, neither zip nor files nor marker.
        assert sorted(nc_files(dataset)) == [f"s2_l1c_rgb_{i:06d}.nc" for i in range(3)]
        assert not (temp / download_dataset.DOWNLOAD_SUBFOLDER / "part_b.zip.part").exists()
        assert not (dataset / download_dataset.STATE_FOLDER / "part_b.zip.json").exists()

        del stand_in.checksums["part_b.zip"]
        stand_in.log.clear()
        assert run(stand_in, folders) == 0
        assert stand_in.mirror_requests("part_a.zip") == []  # verified before: skipped
        assert stand_in.mirror_requests("part_b.zip") == [None]
        assert len(nc_files(dataset)) == 6


@pytest.mark.parametrize("status", [404, 500])
def test_http_error_exits_with_message(zips, folders, status, capsys):
    dataset, _ = folders
    with serve_stand_in(zips) as stand_in:
        stand_in.status_for["part_a.zip"] = status
        assert run(stand_in, folders, "--retries", "2") == 1
        assert_one_line_error(capsys, "part_a.zip", f"HTTP {status}")
        # 404 is final; 500 may be a passing hiccup, so it is retried.
        assert len(stand_in.mirror_requests("part_a.zip")) == (1 if status == 404 else 3)
        assert nc_files(dataset) == {}


def test_metax_errors(zips, folders, capsys):
    with serve_stand_in(zips) as stand_in:
        stand_in.metax_status = 404
        assert run(stand_in, folders) == 1
        assert_one_line_error(capsys, "Metax", "HTTP 404")
        stand_in.metax_status = None
        stand_in.mirror_line = False
        assert run(stand_in, folders) == 1
        assert_one_line_error(capsys, "mirror")


def test_unreachable_server_is_a_clear_error(folders, capsys):
    dataset, temp = folders
    with socket.socket() as probe:  # a port that was free a moment ago: connections are refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code = download_dataset.main(
        [
            "--metax-url",
            f"http://127.0.0.1:{port}",
            "--dataset-folder",
            str(dataset),
            "--temp-folder",
            str(temp),
            "--retries",
            "1",
            "--retry-wait",
            "0",
        ]
    )
    assert code == 1
    assert_one_line_error(capsys, "Metax dataset look-up failed after 2 attempts")


def test_interrupted_transfer_resumes_in_next_run(zips, folders, tmp_path, capsys):
    dataset, temp = folders
    part = temp / download_dataset.DOWNLOAD_SUBFOLDER / "part_a.zip.part"
    size = len(zips["part_a.zip"])
    with serve_stand_in(zips) as stand_in:
        stand_in.cut_next["part_a.zip"] = 1
        assert run(stand_in, folders, "--retries", "0") == 1
        assert_one_line_error(capsys, "part_a.zip", "rerun to continue")
        kept = part.stat().st_size
        assert size // 2 - 1000 < kept <= size // 2  # the received half is kept, but for the last read
        assert nc_files(dataset) == {}

        assert run(stand_in, folders, "--retries", "0") == 0
        assert stand_in.mirror_requests("part_a.zip") == [None, f"bytes={kept}-"]
    assert nc_files(dataset) == expected_nc_files(zips, tmp_path)


@pytest.mark.parametrize("list_sizes", [True, False])
def test_early_close_resumes_within_run(zips, folders, tmp_path, list_sizes):
    # The server announces the whole body (Content-Length) but closes after half of it, twice.
    dataset, _ = folders
    size = len(zips["part_b.zip"])
    with serve_stand_in(zips) as stand_in:
        stand_in.list_sizes = list_sizes  # without: the Content-Length alone must reveal the cut
        stand_in.cut_next["part_b.zip"] = 2
        assert run(stand_in, folders, "--retries", "2") == 0
        ranges = stand_in.mirror_requests("part_b.zip")
        assert len(ranges) == 3 and ranges[0] is None
        starts = [int(r.removeprefix("bytes=").removesuffix("-")) for r in ranges[1:]]
        assert 0 < starts[0] <= size // 2 < starts[1] < size
    assert nc_files(dataset) == expected_nc_files(zips, tmp_path)


def test_stalled_transfer_times_out_and_resumes(zips, folders, tmp_path, capsys):
    # Half the body, then silence for far longer than --timeout: the read times out, the bytes
    # that arrived are kept, and the retry asks for the rest with a Range request.
    dataset, temp = folders
    size = len(zips["part_a.zip"])
    with serve_stand_in(zips) as stand_in:
        stand_in.stall_seconds = 30
        stand_in.stall_next["part_a.zip"] = 1
        assert run(stand_in, folders, "--timeout", "0.5", "--retries", "1") == 0
        ranges = stand_in.mirror_requests("part_a.zip")
        assert len(ranges) == 2 and ranges[0] is None
        start = int(ranges[1].removeprefix("bytes=").removesuffix("-"))
        assert size // 2 - 1000 < start <= size // 2
    assert "part_a.zip" in capsys.readouterr().err  # the retry is reported
    assert nc_files(dataset) == expected_nc_files(zips, tmp_path)
    assert not list((temp / download_dataset.DOWNLOAD_SUBFOLDER).iterdir())


def test_stall_shorter_than_timeout_is_waited_out(zips, folders, tmp_path):
    dataset, _ = folders
    with serve_stand_in(zips) as stand_in:
        stand_in.stall_seconds = 0.5
        stand_in.stall_next["part_a.zip"] = 1
        assert run(stand_in, folders, "--timeout", "5", "--retries", "0") == 0
        assert stand_in.mirror_requests("part_a.zip") == [None]
    assert nc_files(dataset) == expected_nc_files(zips, tmp_path)


def test_stalled_transfer_without_retries_keeps_the_bytes_for_the_next_run(zips, folders, tmp_path, capsys):
    dataset, temp = folders
    part = temp / download_dataset.DOWNLOAD_SUBFOLDER / "part_a.zip.part"
    with serve_stand_in(zips) as stand_in:
        stand_in.stall_seconds = 30
        stand_in.stall_next["part_a.zip"] = 1
        assert run(stand_in, folders, "--timeout", "0.3", "--retries", "0") == 1
        assert_one_line_error(capsys, "part_a.zip", "interrupted", "rerun to continue")
        kept = part.stat().st_size
        assert 0 < kept <= len(zips["part_a.zip"]) // 2
        assert run(stand_in, folders, "--timeout", "0.3", "--retries", "0") == 0
        assert stand_in.mirror_requests("part_a.zip") == [None, f"bytes={kept}-"]
    assert nc_files(dataset) == expected_nc_files(zips, tmp_path)


@pytest.mark.parametrize("framing", ["chunked", "close"])
@pytest.mark.parametrize("list_sizes", [True, False])
def test_surplus_bytes_are_discarded_and_the_transfer_resumed(zips, folders, tmp_path, capsys, framing, list_sizes):
    # The first transfer is cut; its resumption (206, Content-Range and, with chunked framing,
    # Content-Length announcing the rest) inserts bytes in the middle. Those bytes must not
    # reach the file: the whole response is dropped and the same range asked for again.
    dataset, temp = folders
    with serve_stand_in(zips) as stand_in:
        stand_in.list_sizes = list_sizes
        stand_in.extra_framing = framing
        stand_in.cut_next["part_a.zip"] = 1
        stand_in.extra_next["part_a.zip"] = 1
        assert run(stand_in, folders, "--retries", "2") == 0
        ranges = stand_in.mirror_requests("part_a.zip")
        assert len(ranges) == 3 and ranges[0] is None and ranges[1] is not None
        assert ranges[2] == ranges[1]
    err = capsys.readouterr().err
    assert "more than the" in err and "discarded" in err
    assert nc_files(dataset) == expected_nc_files(zips, tmp_path)
    assert not list((temp / download_dataset.DOWNLOAD_SUBFOLDER).iterdir())


def test_surplus_bytes_in_a_full_transfer_are_discarded(zips, folders, tmp_path, capsys):
    # A plain 200 answer with more bytes than its Content-Length (chunked framing) or than the
    # size Metax lists (no Content-Length): dropped, and the file fetched again from the start.
    dataset, _ = folders
    with serve_stand_in(zips) as stand_in:
        for framing in ("chunked", "close"):
            stand_in.extra_framing = framing
            stand_in.extra_next["part_b.zip"] = 1
            stand_in.log.clear()
            assert run(stand_in, folders, "--retries", "1") == 0
            assert stand_in.mirror_requests("part_b.zip") == [None, None], framing
            (dataset / download_dataset.STATE_FOLDER / "part_b.zip.json").unlink()  # fetch again
    assert "more than the" in capsys.readouterr().err
    assert nc_files(dataset) == expected_nc_files(zips, tmp_path)


def test_surplus_bytes_with_no_size_known_fail_the_checksum(zips, folders, capsys):
    # Nothing announces a size (no Content-Length, no Content-Range, none listed by Metax): only
    # the checksum can reveal the surplus, and it does; nothing of the file is kept.
    dataset, temp = folders
    with serve_stand_in(zips) as stand_in:
        stand_in.list_sizes = False
        stand_in.extra_framing = "close"
        stand_in.extra_next["part_a.zip"] = 1
        assert run(stand_in, folders) == 1
        assert_one_line_error(capsys, "checksum mismatch", "part_a.zip")
        assert nc_files(dataset) == {}
        assert not (temp / download_dataset.DOWNLOAD_SUBFOLDER / "part_a.zip.part").exists()


def test_server_ignoring_range_restarts_the_file(zips, folders, tmp_path, capsys):
    dataset, _ = folders
    with serve_stand_in(zips) as stand_in:
        stand_in.cut_next["part_a.zip"] = 1
        assert run(stand_in, folders, "--retries", "0") == 1
        stand_in.honour_range = False
        assert run(stand_in, folders, "--retries", "0") == 0
        assert len(stand_in.mirror_requests("part_a.zip")) == 2
    assert "starting the file over" in capsys.readouterr().err
    assert nc_files(dataset) == expected_nc_files(zips, tmp_path)


@pytest.mark.parametrize("list_sizes", [True, False])
def test_complete_part_file_is_not_downloaded_again(zips, folders, tmp_path, list_sizes):
    # A run stopped between the last byte and the verification leaves a complete .part file.
    dataset, temp = folders
    download_folder = temp / download_dataset.DOWNLOAD_SUBFOLDER
    download_folder.mkdir(parents=True)
    for name, content in zips.items():
        (download_folder / f"{name}.part").write_bytes(content)
    with serve_stand_in(zips) as stand_in:
        stand_in.list_sizes = list_sizes
        assert run(stand_in, folders) == 0
        for name, content in zips.items():
            # With a listed size no request is needed; without, the server answers 416.
            assert stand_in.mirror_requests(name) == ([] if list_sizes else [f"bytes={len(content)}-"])
    assert nc_files(dataset) == expected_nc_files(zips, tmp_path)


def test_unsafe_zip_member_is_refused(folders, tmp_path, capsys):
    import zipfile

    dataset, _ = folders
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as archive:
        archive.writestr("../outside.nc", b"x")
    with serve_stand_in({"evil.zip": evil}) as stand_in:
        assert run(stand_in, folders) == 1
    assert_one_line_error(capsys, "evil.zip", "unsafe path")
    assert not (tmp_path / "outside.nc").exists()
    assert not list(dataset.rglob("*.nc"))


@pytest.mark.parametrize(
    "spelling, hashlib_name",
    [("SHA-256", "sha256"), ("sha256", "sha256"), ("SHA-512", "sha512"), ("MD5", "md5"), ("SHA3-256", "sha3_256")],
)
def test_checksum_algorithm_spellings(spelling, hashlib_name):
    assert download_dataset.new_hash(spelling).name == hashlib_name


def test_unknown_checksum_algorithm_fails_before_download(zips, folders, capsys):
    with serve_stand_in(zips, algorithm="CRC-99") as stand_in:
        stand_in.checksums = {name: "00" for name in zips}
        assert run(stand_in, folders) == 1
        assert stand_in.mirror_requests("part_a.zip") == []
    assert_one_line_error(capsys, "unsupported checksum algorithm", "CRC-99")


def test_malformed_metax_url_is_a_clear_error(folders, capsys):
    dataset, temp = folders
    code = download_dataset.main(
        ["--metax-url", "metax.example", "--dataset-folder", str(dataset), "--temp-folder", str(temp)]
    )
    assert code == 1
    assert_one_line_error(capsys, "metax.example")


@pytest.mark.parametrize(
    "option",
    [
        ["--timeout", "0"],
        ["--timeout", "nan"],
        ["--timeout", "inf"],
        ["--retry-wait", "-1"],
        ["--retry-wait", "inf"],
        ["--retries", "-1"],
    ],
)
def test_bad_options_are_one_line_usage_errors(option, capsys):
    assert download_dataset.main(option) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert "Traceback" not in err and "error:" in last and f"argument {option[0]}: expected" in last
