"""Atomic writes: a file or directory appears whole under its final name, or not at all."""
from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import tempfile

from prompt_tuning.io.errors import CheckpointError


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


def _usual_permissions(root: pathlib.Path) -> None:
  """What a plain write would give (0o666 / 0o777 less the umask), not mkstemp's 0o600.

  Temporary names are created private; what is renamed into place must be readable by
  whoever could read a normally written file (package data, shared model folders).
  """
  mask = _umask()
  paths = [root] + (list(root.rglob("*")) if root.is_dir() else [])
  for p in paths:
    if not p.is_symlink():
      os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~mask)


def _check_target(path: pathlib.Path, overwrite: bool) -> None:
  if path.exists() and not overwrite:
    raise CheckpointError(f"{path} already exists; remove it or pass overwrite=True")
  if not path.parent.is_dir():
    raise CheckpointError(f"cannot write {path}: its parent folder {path.parent} does not exist")


@contextlib.contextmanager
def atomic_directory(path, overwrite: bool = False):
  """Yields a temporary folder beside `path`; renames it to `path` once the block succeeds.

  If the block raises (or the process dies) `path` is untouched; a dead process may leave
  a `.<name>.tmp-*` folder beside it, never a half-written `path`.
  """
  path = pathlib.Path(path)
  _check_target(path, overwrite)
  tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
  try:
    yield tmp
    _usual_permissions(tmp)
    if path.exists():  # overwrite: move the old one aside first, drop it only after the swap.
      old = pathlib.Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
      os.replace(path, old / path.name)
      os.replace(tmp, path)
      shutil.rmtree(old, ignore_errors=True)
    else:
      os.replace(tmp, path)
  finally:
    if tmp.exists():
      shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(path, overwrite: bool = True):
  """Yields a binary file object; its contents replace `path` only once the block succeeds."""
  path = pathlib.Path(path)
  if path.is_dir():
    raise CheckpointError(f"cannot write the file {path}: a folder of that name exists")
  _check_target(path, overwrite)
  fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
  try:
    with os.fdopen(fd, "wb") as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    _usual_permissions(pathlib.Path(tmp))
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
