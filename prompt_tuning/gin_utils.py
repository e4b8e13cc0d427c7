"""Command lines like T5X's: `--gin_file=...` (repeatable), `--gin.NAME=VALUE`, errors in one line.

Gin files are searched, in order, in `--gin_search_paths`, the working directory and
the package (which holds `gin/` and `configs/`), so `--gin_file=configs/quickstart.gin`
works from anywhere.
"""
from __future__ import annotations

import logging
import os
import pathlib
import sys
from typing import Callable, NamedTuple, Optional, Sequence

import gin

PACKAGE_DIR = pathlib.Path(__file__).resolve().parent

USAGE = """usage: python -m {prog} --gin_file=FILE [--gin_file=FILE ...] [--gin.NAME=VALUE ...]
                 [--gin_bindings=BINDING ...] [--gin_search_paths=DIR[,DIR...]]
                 [--verbosity=N]

  --gin_file          a gin file; searched in --gin_search_paths, the working directory
                      and the package's gin/ and configs/ folders
  --gin.NAME=VALUE    bind a gin parameter or macro, e.g. --gin.MODEL_DIR="'/tmp/run'"
  --gin_bindings      a binding in gin syntax, e.g. --gin_bindings="TRAIN_STEPS = 100"
  --gin_search_paths  extra directories to search for gin files, comma separated
  --verbosity         0 (default): a progress line per checkpoint and a summary, no
                      TensorFlow/CUDA start-up lines; 1: every line, every metric
"""


class UsageError(ValueError):
  pass


class Flags(NamedTuple):
  files: list[str]
  bindings: list[str]
  search_paths: list[str]
  verbosity: int = 0


def parse_flags(argv: Sequence[str]) -> Flags:
  """argv → gin files, bindings, search paths, verbosity. Accepts `--flag=value` and
  `--flag value`."""
  files, bindings, paths, verbosity = [], [], [], 0
  args = list(argv)
  i = 0
  while i < len(args):
    arg = args[i]
    if not arg.startswith("--"):
      raise UsageError(f"unexpected argument {arg!r}")
    if "=" in arg:
      name, value = arg[2:].split("=", 1)
    else:
      if i + 1 >= len(args):
        raise UsageError(f"{arg} needs a value")
      name, value = arg[2:], args[i + 1]
      i += 1
    i += 1
    if name == "gin_file":
      files.append(value)
    elif name == "gin_bindings":
      bindings.append(value)
    elif name == "gin_search_paths":
      paths.extend(p for p in value.split(",") if p)
    elif name.startswith("gin."):
      bindings.append(f"{name[4:]} = {value}")
    elif name == "verbosity":
      if value not in ("0", "1"):
        raise UsageError(f"--verbosity must be 0 or 1, got {value!r}")
      verbosity = int(value)
    else:
      raise UsageError(f"unknown flag --{name}")
  return Flags(files, bindings, paths, verbosity)


def search_path(extra: Sequence[str]) -> list[str]:
  return [os.path.abspath(p) for p in extra] + [os.getcwd(), str(PACKAGE_DIR)]


def configure(files: Sequence[str], bindings: Sequence[str], extra_paths: Sequence[str]) -> None:
  """Parses gin files and bindings, with file-not-found and binding errors made plain."""
  import prompt_tuning.configurables  # noqa: F401  (registers every configurable)
  paths = search_path(extra_paths)
  gin.clear_config()
  for path in paths:
    gin.add_config_file_search_path(path)
  for f in files:
    if not os.path.isabs(f) and not any(os.path.isfile(os.path.join(p, f)) for p in paths):
      raise UsageError(f"gin file {f!r} not found; searched: {', '.join(paths)}")
    if os.path.isabs(f) and not os.path.isfile(f):
      raise UsageError(f"gin file {f} does not exist")
  # gin logs "Path not found" for every search path it tries before the one that holds a
  # file (an include from a folder other than the repo's tries several): not an error.
  not_found = _DropPathNotFound()
  logging.getLogger().addFilter(not_found)
  try:
    gin.parse_config_files_and_bindings(list(files), list(bindings), finalize_config=True)
  except (ValueError, SyntaxError, IOError, KeyError) as e:
    message = str(e).strip().splitlines()
    raise UsageError("bad gin configuration: " + " | ".join(m for m in message if m)) from None
  finally:
    logging.getLogger().removeFilter(not_found)


class _DropPathNotFound(logging.Filter):

  def filter(self, record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("Path not found:")


def one_line(error: BaseException) -> str:
  """`error`'s message on one line, without the configurable gin adds below it."""
  text = str(error).split("\n  In call to configurable", 1)[0]
  return " ".join(text.split())


def run(main: Callable[[], object], argv: Optional[Sequence[str]] = None,
        prog: str = "prompt_tuning.train", retain_freed_host_memory: bool = False) -> int:
  """Configures gin from `argv`, runs `main()`, and turns known errors into one line.

  `retain_freed_host_memory` is the command's default for `host_memory.retain_freed`
  (see `prompt_tuning.host_memory`); a gin binding overrides it.
  """
  argv = sys.argv[1:] if argv is None else argv
  if any(a in ("-h", "--help") for a in argv):
    print(USAGE.format(prog=prog))
    return 0
  try:
    flags = parse_flags(argv)
  except UsageError as e:
    print(f"error: {e}\n\n{USAGE.format(prog=prog)}", file=sys.stderr)
    return 2
  from prompt_tuning import logs
  logs.set_up(flags.verbosity)  # before anything imports TensorFlow
  from prompt_tuning.io import CheckpointError
  from prompt_tuning.train.trainer import TrainingError
  try:
    files, bindings, paths = flags.files, flags.bindings, flags.search_paths
    if not files and not bindings:
      raise UsageError("give at least one --gin_file")
    configure(files, bindings, paths)
    from prompt_tuning import host_memory
    host_memory.configure(default=retain_freed_host_memory)
    main()
  except UsageError as e:
    print(f"error: {e}\n\n{USAGE.format(prog=prog)}", file=sys.stderr)
    return 2
  except (CheckpointError, TrainingError, FileNotFoundError, ValueError) as e:
    print(f"error: {one_line(e)}", file=sys.stderr)
    return 1
  except KeyboardInterrupt as e:
    signum = getattr(e, "signum", None)
    if signum is not None:  # the trainer saved a checkpoint first
      print(f"error: {one_line(e)}", file=sys.stderr)
      return 128 + signum
    print("error: interrupted; rerun the same command to continue from the last checkpoint",
          file=sys.stderr)
    return 130
  return 0
