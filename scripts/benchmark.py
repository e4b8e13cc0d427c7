"""Prompt tuning against full fine-tuning and against PEFT/transformers, side by side.

  python scripts/benchmark.py --quick --json=bench.json --markdown=bench.md

Every side (our prompt step, our full fine-tuning steps, PEFT, transformers, a large
matmul) runs in its own worker process (`bench_workers.py`); this coordinator asks them
in turn for one sample each round (A B C ... then ... C B A), so slow drifts on a shared
machine hit every side alike. Ratios are medians of the per-round ratios; peak resident
memory is each worker's `ru_maxrss` after its training rounds; the time to the first
step includes tracing and compilation. Dropout is off on both sides. Weights are random.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from statistics import median

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

# name: (preset, batch, inputs, prompt, targets, new tokens, matmul size)
SHAPES = {
    "small": ("t5_1_1_small", 8, 128, 100, 16, 32, 2048),
    "tiny": ("tiny", 2, 8, 4, 4, 4, 128),
}
# Training sides: (framework, prompt?, input length is inputs + prompt?)
SIDES = {
    "prompt": ("jax", True, False),         # ours: inputs + prompt, prompt trained
    "full_long": ("jax", False, True),      # ours: full fine-tuning on inputs + prompt tokens
    "full": ("jax", False, False),          # ours: full fine-tuning on the inputs alone
    "peft": ("torch", True, False),         # PEFT PromptTuningConfig + AdamW
    "hf_full": ("torch", False, False),     # transformers full fine-tuning + AdamW
    "hf_full_long": ("torch", False, True),
}
# Dense bf16 peak FLOP/s of known accelerators (datasheets); more specific names first.
PEAK_FLOPS = (("H100 PCIe", 756e12), ("H100", 989e12), ("H200", 989e12), ("GH200", 989e12),
              ("A100", 312e12), ("L40S", 362e12), ("L4", 121e12), ("A10", 125e12),
              ("V100", 125e12), ("T4", 65e12))
GOALS = {"prompt_over_full_step_time": ("<=", 0.70), "prompt_tokens_per_s_over_peft": (">=", 1.5),
         "decode_tokens_per_s_over_hf": (">=", 1.5), "flops_utilization": (">=", 0.40)}


class Worker:
  """One side in its own process; `call` sends a request and waits for the reply."""

  def __init__(self, name, spec, env, log_dir):
    self.name = name
    self.log = os.path.join(log_dir, f"{name}.log")
    with open(self.log, "w") as log:
      self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__),
                                    "--_worker", json.dumps(spec)], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, stderr=log, env=env, text=True)

  def _reply(self):
    line = self.proc.stdout.readline()
    if not line:
      with open(self.log) as log:
        tail = log.read()[-3000:]
      raise RuntimeError(f"worker {self.name} exited ({self.proc.poll()}):\n{tail}")
    reply = json.loads(line)
    if "error" in reply:
      raise RuntimeError(f"worker {self.name} failed:\n{reply['error']}")
    return reply

  def ready(self):
    return self._reply()

  def call(self, cmd, **kwargs):
    self.proc.stdin.write(json.dumps({"cmd": cmd, **kwargs}) + "\n")
    self.proc.stdin.flush()
    return self._reply()

  def close(self):
    if self.proc.poll() is None:
      try:
        self.proc.stdin.write(json.dumps({"cmd": "exit"}) + "\n")
        self.proc.stdin.close()
        self.proc.wait(timeout=30)
      except (OSError, subprocess.TimeoutExpired):
        self.proc.kill()


def _env(framework, args):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=REPO)
  if framework == "jax":
    # One device, as a user's single-process run on this machine sees it.
    flags = [f for f in env.get("XLA_FLAGS", "").split()
             if "xla_force_host_platform_device_count" not in f]
    env["XLA_FLAGS"] = " ".join(flags + args.xla_flags.split())
    if args.device == "cpu":
      env["JAX_PLATFORMS"] = "cpu"
    else:
      env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"  # the workers share one GPU
  else:
    if args.device == "cpu":
      env["CUDA_VISIBLE_DEVICES"] = ""
    if args.torch_wait_policy:
      env.setdefault("OMP_WAIT_POLICY", args.torch_wait_policy)
  if args.host_memory == "all":
    # What host_memory.retain_freed_memory() sets, from the process's start.
    from prompt_tuning import host_memory
    env.update(host_memory.ENVIRONMENT)
  return env


def _paired(a, b):
  """Median over rounds of a[i] / b[i]: each pair was measured back to back."""
  return median([x / y for x, y in zip(a, b)])


def _alternate(workers, names, rounds, cmd, gap, deadline=None, **kwargs):
  """Up to `rounds` samples per worker in A B C, then C B A order.

  Returns ({name: [seconds]}, {name: [replies]}, [1-minute load average per round]).
  Stops early, after at least 3 rounds, once `time.perf_counter()` passes `deadline`.
  """
  out = {name: [] for name in names}
  extra = {name: [] for name in names}
  load = []
  for r in range(rounds):
    if deadline is not None and r >= 3 and time.perf_counter() > deadline:
      break
    for name in (names if r % 2 == 0 else names[::-1]):
      time.sleep(gap)  # let the previous side's threads stop spinning
      reply = workers[name].call(cmd, **kwargs)
      out[name].append(reply["seconds"])
      extra[name].append(reply)
    load.append(os.getloadavg()[0])
  return out, extra, load


def wait_quiet(max_load, timeout_s):
  """Waits until the 1-minute load average is under `max_load`; returns the seconds waited."""
  t0 = time.perf_counter()
  while os.getloadavg()[0] > max_load and time.perf_counter() - t0 < timeout_s:
    time.sleep(10)
  return time.perf_counter() - t0


def run(args) -> dict:
  from prompt_tuning.io.hf import hf_config_dict  # configs only: no computation here
  from prompt_tuning.models import get_config
  preset, batch, inputs, prompt, targets, new_tokens, matmul_n = SHAPES[args.shape]
  dtype = "bfloat16" if args.device == "gpu" else "float32"
  cfg = get_config(preset, dropout_rate=0.0)
  threads = len(os.sched_getaffinity(0))
  waited = wait_quiet(args.wait_load, args.wait_s) if args.wait_s else 0.0
  started, load_before = time.perf_counter(), os.getloadavg()
  common = dict(preset=preset, batch=batch, targets=targets, new_tokens=new_tokens,
                dtype=dtype, device=args.device, threads=threads,
                hf_config=hf_config_dict(cfg), matmul=matmul_n,
                matmul_reps=args.matmul_reps)
  sides = [s for s in SIDES if not args.sides or s in args.sides.split(",")]
  log_dir = tempfile.mkdtemp(prefix="benchmark_")
  workers = {}
  try:
    for name in sides:
      framework, prompted, long = SIDES[name]
      spec = dict(common, kind=f"{framework}_train", prompt=prompt if prompted else 0,
                  length=inputs + prompt if long else inputs)
      workers[name] = Worker(name, spec, _env(framework, args), log_dir)
    workers["matmul"] = Worker("matmul", dict(common, kind="jax_matmul"), _env("jax", args),
                               log_dir)
    phases = {}
    mark = lambda name: phases.setdefault(name, time.perf_counter() - started)
    for w in workers.values():
      w.ready()
    mark("workers_ready")
    timed = sides + ["matmul"]
    # Compilation, alone on the machine, one side at a time.
    first = {name: workers[name].call("first_step") for name in timed}
    mark("first_steps")
    _alternate(workers, timed, args.warmup, "train", args.gap, steps=args.steps)
    deadline = lambda share: None if args.budget_s is None else started + share * args.budget_s
    step_s, extra, train_load = _alternate(workers, timed, args.rounds, "train", args.gap,
                                           deadline(0.7), steps=args.steps)
    mark("train_rounds")
    memory = {name: workers[name].call("memory") for name in sides}
    for name in sides:
      if name not in ("prompt", "peft"):
        workers.pop(name).close()
    decode = {}
    if "prompt" in workers and "peft" in workers:
      decode_dir = os.path.join(log_dir, "model")
      decode["ours_first"] = workers["prompt"].call(
          "decode_setup", dir=decode_dir, retain_freed_host_memory=args.host_memory == "infer")
      decode["hf_first"] = workers["peft"].call("decode_setup", dir=decode_dir)
      decode_s, _, decode_load = _alternate(workers, ["prompt", "peft"], args.decode_rounds,
                                            "decode", args.gap, deadline(0.9))
      decode["load"] = decode_load
      decode["seconds"] = decode_s
      decode["torch_matmul"] = workers["peft"].call("matmul", n=matmul_n,
                                                    reps=args.matmul_reps)["flops_per_s"]
      mark("decode")
  finally:
    for w in workers.values():
      w.close()
    shutil.rmtree(os.path.join(log_dir, "model"), ignore_errors=True)  # keep only the logs
  shape = dict(preset=preset, batch=batch, inputs=inputs, prompt=prompt, targets=targets,
               new_tokens=new_tokens, dtype=dtype)
  return summarize(args, shape, sides, first, step_s, extra, memory, decode, dict(
      wall_s=time.perf_counter() - started, phases=phases, train_load=train_load,
      waited_s=waited, load_before=load_before,
      load_after=os.getloadavg(), threads=threads, log_dir=log_dir))


def _device_peak(args, kind):
  if args.peak_tflops:
    return args.peak_tflops * 1e12
  return next((peak for name, peak in PEAK_FLOPS if name in kind), None)


def summarize(args, shape, sides, first, step_s, extra, memory, decode, run_info) -> dict:
  """The JSON report: medians, paired ratios, goals."""
  b = shape["batch"]
  # Tokens a step learns from: the examples' input and target tokens (prompt rows not counted).
  tokens = {n: b * (shape["inputs"] + shape["targets"] + (shape["prompt"] if SIDES[n][2] else 0))
            for n in sides}
  med = {name: median(step_s[name]) for name in sides}
  ratio = lambda a, c: _paired(step_s[a], step_s[c]) if a in med and c in med else None
  inverse = lambda x: None if x is None else 1.0 / x
  matmul = median([r["flops_per_s"] for r in extra["matmul"]])
  report = {
      "prompt_over_full_step_time": ratio("prompt", "full_long"),
      "prompt_over_full_same_task": ratio("prompt", "full"),
      "prompt_tokens_per_s_over_peft": inverse(ratio("prompt", "peft")),
      "full_tokens_per_s_over_hf": inverse(ratio("full", "hf_full")),
      "full_long_tokens_per_s_over_hf": inverse(ratio("full_long", "hf_full_long")),
      "peft_over_hf_full_step_time": ratio("peft", "hf_full_long"),
      "step_time_s": med,
      "step_time_spread": {n: (max(step_s[n]) - min(step_s[n])) / med[n] for n in sides},
      "tokens_per_s": {n: tokens[n] / med[n] for n in sides},
      "examples_per_s": {n: b / med[n] for n in sides},
      "time_to_first_step_s": {n: first[n]["first_step_s"] for n in sides},
      "compile_s": {n: first[n]["compile_s"] for n in sides if "compile_s" in first[n]},
      "step_flops": {n: first[n]["flops"] for n in sides if "flops" in first[n]},
      "peak_rss_mb": {n: memory[n]["peak_rss_mb"] for n in sides},
      "rss_after_imports_mb": {n: memory[n]["rss_after_imports_mb"] for n in sides},
      "matmul_flops_per_s": matmul,
  }
  if "device_peak_mb" in memory.get("prompt", {}):
    report["device_peak_mb"] = {n: memory[n].get("device_peak_mb") for n in sides}
  if "prompt" in med:
    flops = first["prompt"]["flops"]
    report["achieved_flops_per_s"] = flops / med["prompt"]
    report["flops_utilization"] = median(
        [flops / s / r["flops_per_s"] for s, r in zip(step_s["prompt"], extra["matmul"])])
    if "full_long" in report["step_flops"]:
      report["prompt_over_full_flops"] = flops / report["step_flops"]["full_long"]
  if decode:
    n_new = b * shape["new_tokens"]
    ours, hf = decode["seconds"]["prompt"], decode["seconds"]["peft"]
    agree = [x == y for r1, r2 in zip(decode["ours_first"]["tokens"], decode["hf_first"]["tokens"])
             for x, y in zip(r1, r2)]
    report.update({
        "decode_tokens_per_s_over_hf": 1.0 / _paired(ours, hf),
        "decode_tokens_per_s": {"ours": n_new / median(ours), "hf": n_new / median(hf)},
        "time_to_first_decode_s": {"ours": decode["ours_first"]["first_decode_s"],
                                   "hf": decode["hf_first"]["first_decode_s"]},
        "decode_tokens_agree": sum(agree) / len(agree),
        "torch_matmul_flops_per_s": decode["torch_matmul"],
    })
  if args.device == "gpu" and "achieved_flops_per_s" in report:
    kind = first["prompt"]["device_kind"]
    peak = _device_peak(args, kind)
    report["device_kind"], report["device_peak_flops_per_s"] = kind, peak
    if peak:
      report["mfu"] = report["achieved_flops_per_s"] / peak
  report["goals"] = {k: {"goal": f"{op} {v}", "met": None if report.get(k) is None else
                         (report[k] <= v if op == "<=" else report[k] >= v)}
                     for k, (op, v) in GOALS.items()}
  report["shape"] = shape
  report["settings"] = {
      "device": args.device, "rounds": len(next(iter(step_s.values()))),
      "steps_per_sample": args.steps, "warmup_rounds": args.warmup,
      "decode_rounds": len(decode["seconds"]["prompt"]) if decode else 0,
      "budget_s": args.budget_s,
      "weights": "random (numpy, T5's init scales), the same on both sides for decoding",
      "dropout": "off on both sides", "ours_optimizer": "optax Adafactor (factored)",
      "torch_optimizer": "torch.optim.AdamW", "torch_threads": run_info["threads"],
      "torch_omp_wait_policy": (os.environ.get("OMP_WAIT_POLICY") or args.torch_wait_policy
                                or "OpenMP default"),
      "xla_flags": args.xla_flags, "host_memory": args.host_memory}
  report["machine"] = {
      "cpu": platform.processor() or platform.machine(), "cores": run_info["threads"],
      "python": platform.python_version(),
      **{name: _version(name) for name in ("jax", "jaxlib", "torch", "transformers", "peft")},
      "load_average_before": run_info["load_before"], "load_average_after": run_info["load_after"],
      "load_average_per_train_round": run_info["train_load"],
      "load_average_per_decode_round": decode.get("load"),
      "waited_for_quiet_s": run_info["waited_s"]}
  report["wall_s"] = run_info["wall_s"]
  report["phase_end_s"] = run_info["phases"]
  report["log_dir"] = run_info["log_dir"]
  return report


def _version(package):
  try:
    return importlib.metadata.version(package)
  except importlib.metadata.PackageNotFoundError:
    return None


def _fmt(x, digits=3):
  if x is None:
    return "—"
  return f"{x:.{digits}g}" if abs(x) < 1000 else f"{x:,.0f}"


def markdown(r: dict) -> str:
  """Two tables: the ratios with their goals, then memory and time to the first step."""
  st, tps = r["step_time_s"], r["tokens_per_s"]
  mark = lambda k: "" if k not in r["goals"] else (
      f" ({r['goals'][k]['goal']}: {'met' if r['goals'][k]['met'] else 'missed'})")
  sh = r["shape"]
  long, short = sh["inputs"] + sh["prompt"], sh["inputs"]
  rows = [(f"Prompt step / our full step, same {long}-token inputs (s/step)", "prompt",
           "full_long", "prompt_over_full_step_time", st),
          (f"Prompt step / our full step on the {short} inputs, no prompt (s/step)", "prompt",
           "full", "prompt_over_full_same_task", st),
          ("Prompt tuning: ours / PEFT (tokens/s)", "prompt", "peft",
           "prompt_tokens_per_s_over_peft", tps),
          (f"Full fine-tuning, {short} inputs: ours / transformers (tokens/s)", "full", "hf_full",
           "full_tokens_per_s_over_hf", tps),
          (f"Full fine-tuning, {long} inputs: ours / transformers (tokens/s)", "full_long",
           "hf_full_long", "full_long_tokens_per_s_over_hf", tps),
          (f"PEFT step / transformers full step on {long} inputs (s/step)", "peft",
           "hf_full_long", "peft_over_hf_full_step_time", st)]
  lines = ["| Measure | A | B | A / B |", "|---|---:|---:|---:|"]
  for label, a, b, key, table in rows:
    if a in table and b in table:
      lines.append(f"| {label} | {_fmt(table[a])} | {_fmt(table[b])} | "
                   f"**{_fmt(r[key])}**{mark(key)} |")
  if "decode_tokens_per_s" in r:
    d, key = r["decode_tokens_per_s"], "decode_tokens_per_s_over_hf"
    lines.append(f"| Cached greedy decoding: ours / transformers + PEFT (new tokens/s) | "
                 f"{_fmt(d['ours'])} | {_fmt(d['hf'])} | **{_fmt(r[key])}**{mark(key)} |")
  if "flops_utilization" in r:
    lines.append(f"| Prompt step FLOP/s (XLA count) / {r['shape']['dtype']} matmul FLOP/s "
                 f"(GFLOP/s) | {_fmt(r['achieved_flops_per_s'] / 1e9)} | "
                 f"{_fmt(r['matmul_flops_per_s'] / 1e9)} | **{_fmt(r['flops_utilization'])}**"
                 f"{mark('flops_utilization')} |")
  if "mfu" in r:
    lines.append(f"| MFU against {r['device_kind']} peak | | | **{_fmt(r['mfu'])}** |")
  lines += ["", "| Side | s/step | tokens/s | Peak RSS (MiB) | RSS after imports (MiB) | "
                "Time to first step (s) |", "|---|---:|---:|---:|---:|---:|"]
  for n in st:
    lines.append(f"| {n} | {_fmt(st[n])} | {_fmt(tps[n])} | {_fmt(r['peak_rss_mb'][n])} | "
                 f"{_fmt(r['rss_after_imports_mb'][n])} | "
                 f"{_fmt(r['time_to_first_step_s'][n])} |")
  return "\n".join(lines) + "\n"


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--quick", action="store_true", help="fewer rounds (under 15 min on 2 cores)")
  parser.add_argument("--shape", choices=sorted(SHAPES), default="small")
  parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu",
                      help="gpu runs both sides in bfloat16 and reports MFU")
  parser.add_argument("--peak_tflops", type=float, default=None,
                      help="the accelerator's peak for MFU; default: a table of known chips")
  parser.add_argument("--sides", default="", help=f"comma-separated subset of {','.join(SIDES)}")
  parser.add_argument("--rounds", type=int, default=None)
  parser.add_argument("--decode_rounds", type=int, default=None)
  parser.add_argument("--warmup", type=int, default=1, help="unmeasured rounds after compiling")
  parser.add_argument("--steps", type=int, default=None, help="steps per sample")
  parser.add_argument("--matmul_reps", type=int, default=None)
  parser.add_argument("--budget_s", type=float, default=None,
                      help="stop sampling (after 3 rounds) at 70%% (training) and 90%% "
                           "(decoding) of this; --quick: 840")
  parser.add_argument("--wait_s", type=float, default=0,
                      help="first wait up to this long for the load average to fall under "
                           "--wait_load (a shared machine)")
  parser.add_argument("--wait_load", type=float, default=0.5)
  parser.add_argument("--gap", type=float, default=0.2, help="idle seconds before each sample")
  parser.add_argument("--torch_wait_policy", default="",
                      help="OMP_WAIT_POLICY of the torch workers unless already set; '' keeps "
                           "OpenMP's spinning default (fastest on an idle machine). Use PASSIVE "
                           "when other processes share the cores: spinning torch then slows "
                           "down by 5-80x")
  parser.add_argument("--xla_flags", default="", help="extra XLA_FLAGS for our workers")
  parser.add_argument("--host_memory", choices=("infer", "default", "all"), default="infer",
                      help="glibc malloc: 'infer' retains freed memory in our worker from its "
                           "decoding on, as prompt_tuning.infer and eval do; 'default' nowhere; "
                           "'all' in every worker, torch's included, from its start")
  parser.add_argument("--json", default=None, help="write the report here")
  parser.add_argument("--markdown", default=None, help="write the tables here too")
  parser.add_argument("--_worker", default=None, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args._worker:  # pylint: disable=protected-access
    # A side spawned by `Worker`; run as a script, this file's folder is on sys.path.
    from bench_workers import worker_main  # pylint: disable=import-outside-toplevel
    worker_main(args._worker)  # pylint: disable=protected-access
    return 0
  gpu = args.device == "gpu"
  if args.rounds is None:
    args.rounds = 7 if args.quick else 15
  if args.budget_s is None and args.quick:
    args.budget_s = 840.0
  if args.decode_rounds is None:
    args.decode_rounds = args.rounds
  if args.steps is None:
    args.steps = (20 if gpu else 1) * (1 if args.quick else 2)
  if args.matmul_reps is None:
    args.matmul_reps = 50 if gpu else 3
  report = run(args)
  table = markdown(report)
  print(table, end="")
  print(f"wall {report['wall_s']:.0f} s; worker logs in {report['log_dir']}", file=sys.stderr)
  if args.json:
    with open(args.json, "w") as f:
      json.dump(report, f, indent=2)
      f.write("\n")
  if args.markdown:
    with open(args.markdown, "w") as f:
      f.write(table)
  return 0


if __name__ == "__main__":
  sys.exit(main())
