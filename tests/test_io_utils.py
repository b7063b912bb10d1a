"""io_utils: a destination holds its old content or the complete new one, never a mix."""

import json

import numpy as np
import pytest

from io_utils import atomic_path, atomic_write_bytes, atomic_write_json, atomic_write_text, partial_paths


def test_writes_and_replaces(tmp_path):
    target = tmp_path / "sub" / "a.json"
    atomic_write_json(target, {"x": [1, 2]})
    assert json.loads(target.read_text()) == {"x": [1, 2]}
    atomic_write_text(target, "new")
    assert target.read_text() == "new"
    atomic_write_bytes(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    assert list(target.parent.iterdir()) == [target]


def test_failure_keeps_old_content_and_removes_temporary(tmp_path):
    target = tmp_path / "data.npy"
    np.save(target, np.zeros(3))
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            assert tmp.suffix == ".npy" and tmp.parent == tmp_path
            np.save(tmp, np.ones(5))
            raise RuntimeError("simulated crash")
    np.testing.assert_array_equal(np.load(target), np.zeros(3))
    assert partial_paths(target) == []


def test_block_that_writes_nothing_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        with atomic_path(tmp_path / "never.txt"):
            pass
    assert not (tmp_path / "never.txt").exists()


def test_partial_paths_finds_leftovers(tmp_path):
    target = tmp_path / "train_data.npy"
    leftover = tmp_path / "train_data.partial-0a1b2c3d.npy"
    leftover.write_bytes(b"")
    (tmp_path / "test_data.partial-0a1b2c3d.npy").write_bytes(b"")
    assert partial_paths(target) == [leftover]
