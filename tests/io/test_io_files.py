"""Atomic writes: whole or absent, and as readable as a plain write (the umask decides)."""
import os
import stat

import pytest

from prompt_tuning.io.errors import CheckpointError
from prompt_tuning.io.files import atomic_directory, atomic_file


@pytest.fixture
def umask_022():
  old = os.umask(0o022)
  yield
  os.umask(old)


def _mode(path):
  return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_file_has_plain_write_permissions(tmp_path, umask_022):
  with atomic_file(tmp_path / "a.bin") as f:
    f.write(b"x")
  with open(tmp_path / "plain.bin", "wb") as f:
    f.write(b"x")
  assert _mode(tmp_path / "a.bin") == _mode(tmp_path / "plain.bin") == 0o644


def test_atomic_directory_has_plain_write_permissions(tmp_path, umask_022):
  with atomic_directory(tmp_path / "model") as tmp:
    (tmp / "sub").mkdir(mode=0o700)
    (tmp / "sub" / "w.bin").write_bytes(b"w")
    os.chmod(tmp / "sub" / "w.bin", 0o600)  # as a library writing through mkstemp would
  assert _mode(tmp_path / "model") == _mode(tmp_path / "model" / "sub") == 0o755
  assert _mode(tmp_path / "model" / "sub" / "w.bin") == 0o644


def test_a_failed_block_leaves_nothing_and_the_old_copy_intact(tmp_path):
  with atomic_file(tmp_path / "a.bin") as f:
    f.write(b"old")
  with pytest.raises(RuntimeError):
    with atomic_file(tmp_path / "a.bin") as f:
      f.write(b"new")
      raise RuntimeError("interrupted")
  assert (tmp_path / "a.bin").read_bytes() == b"old"
  with pytest.raises(RuntimeError):
    with atomic_directory(tmp_path / "model") as tmp:
      (tmp / "w.bin").write_bytes(b"w")
      raise RuntimeError("interrupted")
  assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]


def test_existing_directory_needs_overwrite(tmp_path):
  (tmp_path / "model").mkdir()
  with pytest.raises(CheckpointError, match="already exists"):
    with atomic_directory(tmp_path / "model"):
      pass
  with atomic_directory(tmp_path / "model", overwrite=True) as tmp:
    (tmp / "new.bin").write_bytes(b"n")
  assert [p.name for p in (tmp_path / "model").iterdir()] == ["new.bin"]
