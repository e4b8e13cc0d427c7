"""Every command in README.md runs, as written, with tiny step counts: docs never drift.

The commands are read out of the README's ```bash and ```python blocks, not copied here.
Each runs in a fresh folder with the substitutions below (each says why); a command of
a kind this file does not know fails the test, so a new README command needs a way to
run here first. The two install commands are checked rather than run: CI (`.ci/run`)
installs the test extra and runs the test command exactly, and the main job's install
is checked to pull no PyTorch.
"""
import importlib.metadata
import pathlib
import re
import shlex
import subprocess
import sys

import pytest

from prompt_tuning.data import corpora
from prompt_tuning.scripts.make_random_model import write_random_model
from test_workflow import write_word_task

REPO = pathlib.Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")
STEPS = 2
# (README text, what the test runs instead, why).
SUBSTITUTIONS = (
    ("/tmp/", "{tmp}/", "every output goes under the test's own folder"),
    ("/models/t5-base-lm-adapt", "{model}", "a real T5 is not here: a tiny random one in its place"),
    ("'train.tsv'", "'{tmp}/train.tsv'", "the user's TSV files: small ones written by the test"),
    ("'validation.tsv'", "'{tmp}/validation.tsv'", "as above"),
    (f"step_300", f"step_{STEPS}", f"the runs here stop at step {STEPS}"),
)
TRAIN_OVERRIDES = (f"--gin.TRAIN_STEPS={STEPS}", f"--gin.CHECKPOINT_PERIOD={STEPS}")


def blocks(language: str) -> list[str]:
  return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def commands() -> list[str]:
  """The shell commands of the bash blocks: continuations joined, comments dropped,
  `a && b` split into its commands."""
  out = []
  for block in blocks("bash"):
    text = block.replace("\\\n", " ")
    for line in text.splitlines():
      line = line.strip()
      if line and not line.startswith("#"):
        out += [c.strip() for c in line.split(" && ")]
  return out


def _substitute(text: str, values: dict) -> str:
  for before, after, _ in SUBSTITUTIONS:
    text = text.replace(before, after.format(**values))
  return text


def _run(argv: list[str], cwd: pathlib.Path) -> str:
  # The package as installed (`pip install -e .`), run from a folder that is not the repo.
  proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=900,
                        check=False)
  assert proc.returncode == 0, (
      f"README command failed ({proc.returncode}): {shlex.join(argv)}\n"
      f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
  return proc.stdout


def test_every_readme_command_runs(tmp_path):
  corpora.prepare(["rotten_tomatoes"], verbose=False)
  values = {"tmp": str(tmp_path), "model": write_random_model(str(tmp_path / "model"), "tiny")}
  write_word_task(tmp_path, {"train": 64, "validation": 8})
  ran, checked = [], []
  for command in commands():
    argv = shlex.split(_substitute(command, values))
    if argv[:2] == ["pip", "install"]:
      checked.append(command)  # test_install_commands
    elif argv[:3] == ["python", "-m", "pytest"]:
      checked.append(command)  # test_ci_runs_the_readme_test_command
    elif argv[:2] == ["python", "scripts/prepare_data.py"]:
      _run([sys.executable, str(REPO / argv[1]), *argv[2:]], tmp_path)
      ran.append(command)
    elif argv[:3] == ["python", "-m", "prompt_tuning.train"]:
      out = _run([sys.executable, *argv[1:], *TRAIN_OVERRIDES,
                  f"--gin.EVAL_PERIOD={STEPS if 'quickstart' in command else None}"], tmp_path)
      if "quickstart" in command:
        assert re.search(r"^rotten_tomatoes_rank_classification/accuracy: 0\.\d+$", out, re.M), out
      ran.append(command)
    elif argv[:2] == ["python", "-m"] and argv[2].startswith("prompt_tuning."):
      _run([sys.executable, *argv[1:]], tmp_path)
      ran.append(command)
    else:
      pytest.fail(f"README command of a kind this test cannot run: {command}")
  for snippet in blocks("python"):
    script = tmp_path / "snippet.py"
    script.write_text(_substitute(snippet, values), encoding="utf-8")
    _run([sys.executable, str(script)], tmp_path)
    ran.append(snippet)
  assert len(checked) == 3 and len(ran) >= 5, (ran, checked)
  assert (tmp_path / "run" / "prompts" / f"step_{STEPS}.npy").exists()


def _requirement_closure(dist: str, extras: frozenset = frozenset()) -> set[str]:
  """Names of the installed distributions `dist` (with `extras`) pulls in, transitively."""
  seen, todo = set(), [(dist, extras)]
  while todo:
    name, wanted = todo.pop()
    key = name.lower().replace("_", "-")
    if key in seen:
      continue
    seen.add(key)
    try:
      requires = importlib.metadata.requires(name) or []
    except importlib.metadata.PackageNotFoundError:
      continue  # a marker-excluded or optional requirement that is not installed
    for req in requires:
      spec, _, marker = req.partition(";")
      extra = re.search(r"extra\s*==\s*['\"]([^'\"]+)['\"]", marker)
      if extra and extra.group(1) not in wanted:
        continue
      if marker.strip() and not extra:
        from packaging.markers import Marker
        if not Marker(marker.strip()).evaluate():
          continue
      todo.append((re.split(r"[\s\[<>=!~(]", spec.strip(), maxsplit=1)[0], frozenset()))
  return seen


def test_install_commands():
  """The main job's install (`pip install -e .`) pulls no PyTorch; the test extra does."""
  install = [c for c in commands() if c.startswith("pip install")]
  assert install == ["pip install -e .", 'pip install -e ".[test]"'], install
  base = _requirement_closure("prompt-tuning")
  assert "jax" in base and "seqio" in base
  assert not base & {"torch", "transformers", "peft"}, sorted(base & {"torch", "transformers"})
  assert "torch" in _requirement_closure("prompt-tuning", frozenset({"test"}))


def test_ci_runs_the_readme_test_command():
  test_command = [c for c in commands() if c.startswith("python -m pytest")]
  assert test_command == ["python -m pytest -q tests"]
  ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
  assert re.search(r'pip install --quiet -e "\.\[test\]"', ci)
  assert re.search(rf"^{re.escape(test_command[0])} \|\| status=\$\?$", ci, re.M)
