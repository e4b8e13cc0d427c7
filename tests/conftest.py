"""Shared test set-up: an 8-device CPU platform so mesh tests can run in-process."""
import os

if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

from repo_paths import REPO_ROOT, SHARED_REFERENCE  # noqa: E402,F401

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def shared_reference():
  """`../shared/reference`: files written by other systems; skip where it is absent."""
  if not SHARED_REFERENCE.is_dir():
    pytest.skip(f"{SHARED_REFERENCE} is absent (it sits beside the repository in CI)")
  return SHARED_REFERENCE
