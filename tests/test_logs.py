"""Quiet runs: no TensorFlow/CUDA/absl start-up lines at the default verbosity, a
progress line per checkpoint and a summary; `--verbosity=1` prints everything."""
import os
import platform
import re
import subprocess
import sys

from prompt_tuning import logs
from repo_paths import REPO_ROOT as REPO
from test_workflow import _task_flags, workdir  # noqa: F401  (workdir: a fixture)

# What TensorFlow 2.21 (a CUDA build, on a machine with no GPU) and absl print at start-up.
START_UP = """\
WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
I0000 00:00:1796593351.913526    4428 port.cc:153] oneDNN custom operations are on. You may see slightly different numerical results.
I0000 00:00:1796593351.914723    4428 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.
I0000 00:00:1796594946.703622   26980 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use available CPU instructions in performance-critical operations.
To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild TensorFlow with the appropriate compiler flags.
E0000 00:00:1796593371.782050    4428 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)
WARNING:jax._src.xla_bridge:An NVIDIA GPU may be present on this machine, but a CUDA-enabled jaxlib is not installed. Falling back to cpu.
"""
REAL = """\
E0000 00:00:1796593371.782050    4428 op_kernel.cc:1830] OP_REQUIRES failed at save_restore.cc:12 : NOT_FOUND: /data/x
F0000 00:00:1796593371.782050    4428 env.cc:44] Check failed: ok
Traceback (most recent call last):
ValueError: something real
"""
NOISE = re.compile(r"^[IWEF]\d{4} |absl|cuda|oneDNN|TensorFlow|tensorflow|jax", re.I | re.M)


def test_start_up_lines_go_and_real_errors_stay():
  assert logs.filter_start_up(START_UP) == ""
  assert logs.filter_start_up(START_UP + REAL) == REAL


def _train(workdir, model_dir, *extra):  # noqa: F811
  """Trains 8 steps as a user would: no environment variable quieting anything."""
  env = {k: v for k, v in os.environ.items()
         if k not in ("TF_CPP_MIN_LOG_LEVEL", "CUDA_VISIBLE_DEVICES", "JAX_PLATFORMS")}
  env.update(XLA_FLAGS="", PYTHONUNBUFFERED="1")
  result = subprocess.run(
      [sys.executable, "-m", "prompt_tuning.train", *_task_flags(workdir, model_dir, 8), *extra],
      capture_output=True, text=True, env=env, timeout=900, cwd=REPO)
  assert result.returncode == 0, result.stderr[-3000:]
  return result


def test_default_output_is_progress_and_summary(workdir, tmp_path):  # noqa: F811
  model_dir = tmp_path / "run"
  result = _train(workdir, model_dir)
  assert not NOISE.search(result.stderr), result.stderr
  assert not NOISE.search(result.stdout), result.stdout
  lines = result.stdout.splitlines()
  assert len(lines) == 3, result.stdout
  assert re.fullmatch(r"step 4/8  loss \d\S*  [\d.]+ examples/s  ETA 0:\d\d:\d\d", lines[0])
  assert lines[1].startswith("step 8/8  loss ")
  assert re.fullmatch(rf"trained steps 0-8 in 0:\d\d:\d\d, final loss \d\S*; prompt written "
                      rf"to {re.escape(str(model_dir / 'prompts' / 'step_8.npy'))}", lines[2])
  assert (model_dir / "metrics.jsonl").read_text().count("train/loss") == 3  # steps 1, 4, 8


def test_verbosity_1_prints_every_metric_and_start_up_line(workdir, tmp_path):  # noqa: F811
  result = _train(workdir, tmp_path / "run", "--verbosity=1")
  full = [l for l in result.stdout.splitlines() if l.startswith("step 4: ")]
  assert len(full) == 1 and "train/loss=" in full[0] and "train/grad_norm=" in full[0]
  assert "step 8/8  loss " in result.stdout and "trained steps 0-8" in result.stdout
  if sys.platform.startswith("linux") and platform.machine() == "x86_64":
    # TensorFlow's x86 Linux builds announce oneDNN at import: it is back.
    assert any(logs.is_start_up_noise(l) for l in result.stderr.splitlines()), result.stderr
