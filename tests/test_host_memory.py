"""`prompt_tuning.host_memory`: freed blocks stay mapped, and the command lines choose it."""
import subprocess
import sys
import textwrap

import gin
import pytest

from prompt_tuning import gin_utils, host_memory

# Faults taken by writing a fresh 256 MiB malloc block, after one such block was freed.
_FAULTS = textwrap.dedent("""
    import ctypes, resource, sys
    from prompt_tuning import host_memory
    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    size = 256 << 20
    def faults_to_fill_a_block():
      block = libc.malloc(size)
      before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
      ctypes.memset(block, 1, size)
      faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
      libc.free(block)
      return faults
    if sys.argv[1] == "retain":
      assert host_memory.retain_freed_memory()
    faults_to_fill_a_block()
    print(faults_to_fill_a_block())
""")


def _faults(mode: str) -> int:
  out = subprocess.run([sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True,
                       check=True)
  return int(out.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc is Linux's")
def test_a_freed_block_is_reused_without_faulting_its_pages_in_again():
  pages = (256 << 20) // 4096
  default, retained = _faults("default"), _faults("retain")
  # glibc's default unmaps the freed block: the next one faults in every page again.
  assert default > pages // 2, default
  assert retained < pages // 50, retained


@pytest.fixture
def recorded(monkeypatch):
  calls = []
  monkeypatch.setattr(host_memory, "retain_freed_memory", lambda: calls.append(1) or True)
  yield calls
  gin.clear_config()


@pytest.mark.parametrize("binding, default, applied", [
    (None, False, False), (None, True, True), ("True", False, True), ("False", True, False)])
def test_the_command_line_default_and_the_gin_binding(recorded, binding, default, applied):
  argv = ["--gin.MODEL_DIR='/unused'"]
  if binding is not None:
    argv.append(f"--gin.host_memory.retain_freed={binding}")
  ran = []
  assert gin_utils.run(lambda: ran.append(1), argv, retain_freed_host_memory=default) == 0
  assert ran == [1] and recorded == ([1] if applied else [])


def test_a_bad_binding_is_a_usage_error(recorded, capsys):
  assert gin_utils.run(lambda: None, ["--gin.host_memory.retain=True"]) == 2
  assert "host_memory" in capsys.readouterr().err and recorded == []
