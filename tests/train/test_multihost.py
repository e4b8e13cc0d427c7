"""Two processes x 4 CPU devices train exactly as one process with 8 devices.

The workers join through `jax.distributed` on 127.0.0.1 and each feeds its own share
of the batch through `program.place_batch`; the reference runs the same steps in this
process on the 8 devices that conftest.py gives it.
"""
import os
import pathlib
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

import multihost_worker

WORKER = pathlib.Path(multihost_worker.__file__).resolve()
REPO_ROOT = WORKER.parents[2]
NUM_PROCESSES = 2
TIMEOUT_S = 120


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _launch(tmp_path: pathlib.Path) -> list[tuple[subprocess.Popen, pathlib.Path, object]]:
  path = os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
         "JAX_PLATFORMS": "cpu", "PYTHONPATH": path}
  port = _free_port()
  workers = []
  for pid in range(NUM_PROCESSES):
    out = tmp_path / f"process_{pid}.npz"
    log = open(tmp_path / f"process_{pid}.log", "w+")
    cmd = [sys.executable, str(WORKER), str(out), str(port), str(pid), str(NUM_PROCESSES)]
    workers.append((subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT),
                    out, log))
  return workers


def _collect(workers, deadline: float) -> list[dict[str, np.ndarray]]:
  """Waits for the workers and loads their results; one failing or the deadline kills all."""
  procs = [proc for proc, _, _ in workers]
  while any(p.poll() is None for p in procs) and not any(p.poll() for p in procs):
    if time.monotonic() > deadline:
      break
    time.sleep(0.2)
  timed_out = time.monotonic() > deadline
  for proc in procs:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
  failures = []
  for pid, (proc, out, log) in enumerate(workers):
    log.seek(0)
    text = log.read()
    log.close()
    if timed_out or proc.returncode != 0 or not out.exists():
      failures.append(f"--- process {pid} (exit {proc.returncode}) ---\n{text[-4000:]}")
  if failures:
    reason = f"timed out after {TIMEOUT_S} s" if timed_out else "failed"
    pytest.fail(f"multi-process workers {reason}:\n" + "\n".join(failures), pytrace=False)
  return [dict(np.load(out)) for _, out, _ in workers]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  deadline = time.monotonic() + TIMEOUT_S
  workers = _launch(tmp_path_factory.mktemp("multihost"))
  try:
    reference = multihost_worker.run_layouts()  # overlaps with the workers
  except BaseException:
    for proc, _, _ in workers:
      proc.kill()
      proc.wait()
    raise
  return _collect(workers, deadline), reference


def test_reference_is_single_process_on_eight_devices(runs):
  processes, reference = runs
  assert int(reference["process_count"]) == 1
  assert all(int(p["process_count"]) == NUM_PROCESSES for p in processes)


@pytest.mark.parametrize("layout", sorted(multihost_worker.LAYOUTS))
def test_each_process_feeds_its_share_into_the_right_rows(runs, layout):
  processes, _ = runs
  expected = multihost_worker.global_batch()["encoder_input_tokens"]
  for pid, result in enumerate(processes):
    np.testing.assert_array_equal(result[f"{layout}/placed_inputs"], expected,
                                  err_msg=f"process {pid}")


@pytest.mark.parametrize("layout", sorted(multihost_worker.LAYOUTS))
def test_two_processes_match_one(runs, layout):
  processes, reference = runs
  ref_loss, ref_prompt = reference[f"{layout}/loss"], reference[f"{layout}/prompt"]
  assert ref_loss.shape == (multihost_worker.NUM_STEPS,)
  assert ref_loss[-1] < ref_loss[0]  # the steps did train
  for pid, result in enumerate(processes):
    np.testing.assert_allclose(result[f"{layout}/loss"], ref_loss, rtol=0, atol=1e-5,
                               err_msg=f"process {pid} loss")
    np.testing.assert_allclose(result[f"{layout}/prompt"], ref_prompt, rtol=0, atol=1e-5,
                               err_msg=f"process {pid} prompt")
