"""scripts/bench_decode.py on the tiny model: both compilations run, alternate and report."""
import json
import os
import subprocess
import sys
from statistics import median

from repo_paths import REPO_ROOT

SCRIPT = str(REPO_ROOT / "scripts" / "bench_decode.py")


def _run(*args, cwd):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True,
                        env=env, timeout=300, cwd=cwd)


def test_report(tmp_path):
  out = tmp_path / "ab.json"
  result = _run("--preset=tiny", "--batch=2", "--inputs=8", "--prompt=4", "--new_tokens=4",
                "--rounds=3", "--gap=0", f"--json={out}", cwd=tmp_path)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(out.read_text())
  assert report["shape"] == {"preset": "tiny", "batch": 2, "inputs": 8, "prompt": 4,
                             "new_tokens": 4}
  assert report["options_b"] == {"xla_cpu_experimental_ynn_fusion_type": ""}
  assert len(report["ratios"]) == 3 and report["b_over_a"] == median(report["ratios"])
  assert report["seconds_a"] > 0 and report["seconds_b"] > 0
  assert isinstance(report["same_tokens"], bool)
  assert "B / A" in result.stdout


def test_train_step_report(tmp_path):
  out = tmp_path / "ab.json"
  result = _run("--program=train_step", "--preset=tiny", "--batch=2", "--inputs=8",
                "--prompt=4", "--targets=4", "--rounds=2", "--gap=0", f"--json={out}",
                cwd=tmp_path)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(out.read_text())
  assert report["program"] == "train_step"
  assert report["shape"] == {"preset": "tiny", "batch": 2, "inputs": 8, "prompt": 4,
                             "targets": 4}
  assert len(report["ratios"]) == 2 and report["b_over_a"] == median(report["ratios"])
  # Two compilations of one step from one state: the same loss up to float rounding.
  losses = report["losses"]
  assert losses["A"] > 0 and abs(losses["A"] - losses["B"]) <= 1e-4 * losses["A"]
  assert report["loss_difference"] == abs(losses["A"] - losses["B"])
  assert "prompt-tuning step" in result.stdout


def test_bad_options_are_a_usage_error(tmp_path):
  result = _run("--preset=tiny", "--options={not json", cwd=tmp_path)
  assert result.returncode == 2 and "--options" in result.stderr
