"""scripts/benchmark.py end to end on the tiny shape: every worker kind, JSON and tables."""
import json
import os
import subprocess
import sys

import pytest

from repo_paths import REPO_ROOT

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

# One side of each code path: our prompt and full steps, PEFT and plain transformers.
SIDES = "prompt,full_long,peft,hf_full_long"


@pytest.fixture(scope="module")
def report(tmp_path_factory):
  out = tmp_path_factory.mktemp("bench")
  cmd = [sys.executable, str(REPO_ROOT / "scripts" / "benchmark.py"), "--shape=tiny",
         f"--sides={SIDES}", "--rounds=1", "--warmup=0", "--gap=0",
         "--torch_wait_policy=PASSIVE",  # the test machine is shared
         f"--json={out / 'bench.json'}", f"--markdown={out / 'bench.md'}"]
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  # From outside the repository: the workers must find `bench_workers` and the package.
  result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=out)
  assert result.returncode == 0, result.stderr[-3000:]
  return (json.loads((out / "bench.json").read_text()), (out / "bench.md").read_text(),
          result.stdout)


def test_goal_keys_are_positive(report):
  r, _, _ = report
  for key in ("prompt_over_full_step_time", "prompt_tokens_per_s_over_peft",
              "decode_tokens_per_s_over_hf", "flops_utilization",
              "full_long_tokens_per_s_over_hf", "peft_over_hf_full_step_time",
              "matmul_flops_per_s", "achieved_flops_per_s", "torch_matmul_flops_per_s"):
    assert r[key] > 0, key
  assert set(r["goals"]) == {"prompt_over_full_step_time", "prompt_tokens_per_s_over_peft",
                             "decode_tokens_per_s_over_hf", "flops_utilization"}
  assert all(isinstance(g["met"], bool) for g in r["goals"].values())
  # Sides left out of the run report no ratio rather than a made-up one.
  assert r["prompt_over_full_same_task"] is None and r["full_tokens_per_s_over_hf"] is None


def test_per_side_measures_are_positive(report):
  r, _, _ = report
  sides = set(SIDES.split(","))
  for key in ("step_time_s", "tokens_per_s", "examples_per_s", "time_to_first_step_s",
              "peak_rss_mb", "rss_after_imports_mb"):
    assert set(r[key]) == sides, key
    assert all(v > 0 for v in r[key].values()), key
  assert set(r["compile_s"]) == set(r["step_flops"]) == {"prompt", "full_long"}
  # Our prompt step skips the frozen weights' gradients: XLA counts fewer FLOPs.
  assert 0 < r["prompt_over_full_flops"] < 1
  assert r["decode_tokens_per_s"]["ours"] > 0 and r["decode_tokens_per_s"]["hf"] > 0
  assert all(v > 0 for v in r["time_to_first_decode_s"].values())


def test_both_sides_decode_the_same_model(report):
  r, _, _ = report
  # Same weights and prompt, greedy: transformers + PEFT emit our tokens.
  assert r["decode_tokens_agree"] >= 0.9


def test_markdown_is_written_and_printed(report):
  _, table, stdout = report
  assert table == stdout
  assert "Prompt tuning: ours / PEFT (tokens/s)" in table
  assert "| prompt |" in table and "| peft |" in table


def test_host_memory_setting(report, monkeypatch):
  r, _, _ = report
  assert r["settings"]["host_memory"] == "infer"  # our decoding as prompt_tuning.infer runs it
  monkeypatch.syspath_prepend(str(REPO_ROOT / "scripts"))
  monkeypatch.delenv("MALLOC_MMAP_MAX_", raising=False)
  import benchmark  # pylint: disable=import-outside-toplevel
  args = benchmark.argparse.Namespace(xla_flags="", device="cpu", torch_wait_policy="",
                                      host_memory="all")
  for framework in ("jax", "torch"):
    assert benchmark._env(framework, args)["MALLOC_MMAP_MAX_"] == "0"
  args.host_memory = "infer"
  assert "MALLOC_MMAP_MAX_" not in benchmark._env("torch", args)
