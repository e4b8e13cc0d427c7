"""The benchmark's sides, each served in its own process by `scripts/benchmark.py`.

`scripts/benchmark.py --_worker SPEC_JSON` builds one side (`JaxTrain`, `JaxMatmul` or
`TorchTrain`, after the spec's `kind`) and answers requests (`first_step`, `train`,
`memory`, `decode_setup`, `decode`, `matmul`): one JSON object per line on stdin, one
JSON reply per line on stdout. Heavy imports happen inside each side, so a process only
pays for its own framework (and its RSS after imports says so).
"""
from __future__ import annotations

import json
import os
import resource
import sys
import time
import traceback


def _rss_mb() -> dict:
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
  try:
    import psutil  # pylint: disable=import-outside-toplevel
    now = psutil.Process().memory_info().rss / 2**20
  except ImportError:
    now = None
  return {"peak_rss_mb": peak, "rss_mb": now}


def _memory(rss_after_imports, device_peak_bytes=None) -> dict:
  out = {"rss_after_imports_mb": rss_after_imports, **_rss_mb()}
  if device_peak_bytes is not None:
    out["device_peak_mb"] = device_peak_bytes / 2**20
  return out


def _batch(spec, vocab):
  """The same random `(inputs [batch, length], targets [batch, targets])` on every side."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  rng = np.random.RandomState(1)
  draw = lambda length: rng.randint(2, vocab, (spec["batch"], length)).astype(np.int32)
  return draw(spec["length"]), draw(spec["targets"])


# --------------------------------------------------------------------------- JAX workers


def _random_params(abstract, head_dim):
  """Random weights from numpy (no XLA compile), scaled as T5 initialises them.

  Kernels N(0, 1/fan_in), with the query's also divided by sqrt(head_dim) (T5 folds the
  attention scaling into it; without it attention is near one-hot and greedy decoding
  turns chaotic); embeddings N(0, 1); norms 1.
  """
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)

  def draw(path, leaf):
    name = jax.tree_util.keystr(path)
    if len(leaf.shape) == 1:
      return np.ones(leaf.shape, np.float32)
    scale = 0.5 if "prompt" in name else 1.0 if "embedding" in name else leaf.shape[0] ** -0.5
    if "'query'" in name:
      scale /= head_dim ** 0.5
    return (rng.standard_normal(leaf.shape, np.float32) * scale).astype(leaf.dtype)
  return jax.tree_util.tree_map_with_path(draw, abstract)


class JaxTrain:
  """Our train step: the prompt alone (`prompt`) or every parameter (`full*`)."""

  def __init__(self, spec):
    import flax.linen as nn
    import jax
    import numpy as np
    from prompt_tuning.models import get_config
    from prompt_tuning.models.network import T5
    from prompt_tuning.prompts import prompted_t5
    from prompt_tuning.train import optimizers, partitioning
    from prompt_tuning.train import step as step_lib
    from prompt_tuning.train.state import EVERYTHING, PROMPT_ONLY, split_params
    self.jax = jax
    self.rss_after_imports = _rss_mb()["peak_rss_mb"]
    if spec["device"] == "gpu" and jax.devices()[0].platform != "gpu":
      raise RuntimeError(f"--device=gpu but JAX sees {jax.devices()}: install jax[cuda12]")
    cfg = get_config(spec["preset"], dropout_rate=0.0, dtype=spec["dtype"])
    self.cfg, self.spec = cfg, spec
    self.model = prompted_t5(cfg, spec["prompt"]) if spec["prompt"] else T5(cfg)
    mesh = partitioning.make_mesh((1, 1), jax.devices()[:1])
    loss = step_lib.LossConfig(enable_dropout=False)
    abstract = step_lib.abstract_params(self.model)
    trainable = PROMPT_ONLY if spec["prompt"] else EVERYTHING
    train, frozen = split_params(_random_params(nn.meta.unbox(abstract), cfg.head_dim),
                                  trainable)
    if spec["prompt"]:
      self.prompt0 = train["encoder_prompt"]["prompt"]
    # Adafactor as each method uses it: the paper's settings for the prompt, T5's 1e-3 else.
    tx = optimizers.adafactor() if spec["prompt"] else optimizers.adafactor(1e-3)
    self.program = step_lib.build(self.model, tx, mesh, abstract, trainable, loss)
    self.state, self.frozen = self.program.init_state(train, frozen)
    del train, frozen
    self.inputs, targets = _batch(spec, cfg.vocab_size)
    batch = {"encoder_input_tokens": self.inputs,
             "decoder_input_tokens": np.pad(targets[:, :-1], ((0, 0), (1, 0))),
             "decoder_target_tokens": targets}
    self.batch = self.program.place_batch(batch)
    self.step = None

  def first_step(self, _):
    t0 = time.perf_counter()
    with self.program.context():
      compiled = self.program.jit_train_step.lower(self.state, self.frozen, self.batch).compile()
    t1 = time.perf_counter()
    self.step = compiled
    self.state, metrics = compiled(self.state, self.frozen, self.batch)
    loss = float(metrics["loss"])
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return {"compile_s": t1 - t0, "first_step_s": time.perf_counter() - t0, "loss": loss,
            "flops": float(cost["flops"]), "device_kind": self.jax.devices()[0].device_kind}

  def train(self, msg):
    t0 = time.perf_counter()
    for _ in range(msg["steps"]):
      self.state, metrics = self.step(self.state, self.frozen, self.batch)
    self.jax.block_until_ready((self.state, metrics))
    seconds = (time.perf_counter() - t0) / msg["steps"]
    return {"seconds": seconds, "loss": float(metrics["loss"])}

  def memory(self, _):
    stats = self.jax.devices()[0].memory_stats() or {}
    return _memory(self.rss_after_imports, stats.get("peak_bytes_in_use"))

  def decode_setup(self, msg):
    """Compiles greedy decoding with the initial prompt; writes the model for transformers."""
    import jax.numpy as jnp
    import numpy as np
    from prompt_tuning.io.hf import write_hf_checkpoint
    from prompt_tuning.models import decoding
    from prompt_tuning.train.state import merge_params
    from prompt_tuning import host_memory
    self.step = None  # free the train executable's buffers before decoding
    if msg.get("retain_freed_host_memory"):  # as prompt_tuning.infer and eval do
      host_memory.retain_freed_memory()
    write_hf_checkpoint(msg["dir"], self.cfg, self.jax.tree.map(np.asarray, self.frozen),
                        overwrite=True)
    np.save(os.path.join(msg["dir"], "prompt.npy"), self.prompt0)
    self.params = merge_params(self.frozen, {"encoder_prompt": {"prompt": jnp.asarray(
        self.prompt0)}})
    self.encoder_tokens = jnp.asarray(self.inputs)
    self.generate = lambda: decoding.generate(self.model, self.params, self.encoder_tokens,
                                              max_decode_length=self.spec["new_tokens"],
                                              eos_id=-1)  # never stop early: always N tokens
    t0 = time.perf_counter()
    tokens = self.jax.block_until_ready(self.generate()[0])
    return {"first_decode_s": time.perf_counter() - t0, "tokens": np.asarray(tokens).tolist()}

  def decode(self, _):
    t0 = time.perf_counter()
    self.jax.block_until_ready(self.generate())
    return {"seconds": time.perf_counter() - t0}


class JaxMatmul:
  """FLOP/s of one large square matmul in the activations' dtype, as XLA runs it."""

  def __init__(self, spec):
    import jax
    import jax.numpy as jnp
    self.jax, n = jax, spec["matmul"]
    dtype = jnp.dtype(spec["dtype"])
    keys = jax.random.split(jax.random.PRNGKey(0))
    self.a, self.b = (jax.random.normal(k, (n, n), dtype) for k in keys)
    self.matmul = jax.jit(lambda a, b: a @ b)
    self.flops = 2.0 * n**3
    self.reps = spec["matmul_reps"]

  def first_step(self, _):
    t0 = time.perf_counter()
    self.jax.block_until_ready(self.matmul(self.a, self.b))
    return {"first_step_s": time.perf_counter() - t0, "flops": self.flops}

  def train(self, _):
    t0 = time.perf_counter()
    for _ in range(self.reps):
      out = self.matmul(self.a, self.b)
    self.jax.block_until_ready(out)
    seconds = (time.perf_counter() - t0) / self.reps
    return {"seconds": seconds, "flops_per_s": self.flops / seconds}


# ------------------------------------------------------------------------- torch workers


class TorchTrain:
  """transformers `T5ForConditionalGeneration`, with PEFT prompt tuning or fully trained.

  Parameters stay float32; on a GPU the forward runs under bfloat16 autocast, as ours
  keeps float32 parameters and computes in bfloat16.
  """

  def __init__(self, spec):
    import contextlib
    import torch
    import transformers
    if spec["prompt"]:
      import peft  # noqa: F401  (counted in the RSS after imports)
    self.torch, self.spec = torch, spec
    self.rss_after_imports = _rss_mb()["peak_rss_mb"]
    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    self.device = "cuda" if spec["device"] == "gpu" else "cpu"
    self.compute_dtype = getattr(torch, spec["dtype"])
    self.autocast = ((lambda: torch.autocast("cuda", dtype=self.compute_dtype))
                     if self.device == "cuda" else contextlib.nullcontext)
    model = transformers.T5ForConditionalGeneration(transformers.T5Config(**spec["hf_config"]))
    self.model = self._peft(model) if spec["prompt"] else model
    self.model.to(self.device).train()
    trainable = [p for p in self.model.parameters() if p.requires_grad]
    self.opt = torch.optim.AdamW(trainable, lr=1e-3)
    inputs, targets = _batch(spec, spec["hf_config"]["vocab_size"])
    self.input_ids = torch.from_numpy(inputs).long().to(self.device)
    self.labels = torch.from_numpy(targets).long().to(self.device)
    self.mask = torch.ones_like(self.input_ids)

  def _peft(self, model):
    import peft  # pylint: disable=import-outside-toplevel
    config = peft.PromptTuningConfig(task_type=peft.TaskType.SEQ_2_SEQ_LM,
                                     num_virtual_tokens=self.spec["prompt"])
    return peft.get_peft_model(model, config)

  def _sync(self):
    if self.device == "cuda":
      self.torch.cuda.synchronize()

  def _step(self):
    with self.autocast():
      loss = self.model(input_ids=self.input_ids, attention_mask=self.mask,
                        labels=self.labels).loss
    loss.backward()
    self.opt.step()
    self.opt.zero_grad(set_to_none=True)
    return loss.detach()

  def first_step(self, _):
    t0 = time.perf_counter()
    loss = float(self._step())
    return {"first_step_s": time.perf_counter() - t0, "loss": loss}

  def train(self, msg):
    t0 = time.perf_counter()
    for _ in range(msg["steps"]):
      loss = self._step()
    self._sync()
    return {"seconds": (time.perf_counter() - t0) / msg["steps"], "loss": float(loss)}

  def memory(self, _):
    cuda = self.device == "cuda"
    return _memory(self.rss_after_imports, self.torch.cuda.max_memory_allocated() if cuda else None)

  def decode_setup(self, msg):
    """Loads our model and prompt into transformers + PEFT; one cached greedy decode."""
    import numpy as np
    import transformers
    torch = self.torch
    del self.model, self.opt
    model = transformers.T5ForConditionalGeneration.from_pretrained(msg["dir"])
    model.generation_config.eos_token_id = None  # never stop early: always N tokens
    self.model = self._peft(model).to(self.device).eval()
    prompt = torch.from_numpy(np.load(os.path.join(msg["dir"], "prompt.npy")))
    table = self.model.prompt_encoder["default"].embedding.weight
    with torch.no_grad():
      table[:prompt.shape[0]] = prompt.to(table)  # PEFT feeds the encoder the first p rows
    t0 = time.perf_counter()
    tokens = self._generate()
    return {"first_decode_s": time.perf_counter() - t0, "tokens": tokens[:, 1:].tolist()}

  def _generate(self):
    with self.torch.inference_mode(), self.autocast():
      out = self.model.generate(input_ids=self.input_ids, attention_mask=self.mask,
                                max_new_tokens=self.spec["new_tokens"], do_sample=False,
                                num_beams=1, use_cache=True)
    self._sync()
    if out.shape[1] != self.spec["new_tokens"] + 1:
      raise RuntimeError(f"transformers generated {out.shape[1] - 1} tokens, wanted "
                         f"{self.spec['new_tokens']}")
    return out.cpu()

  def decode(self, _):
    t0 = time.perf_counter()
    self._generate()
    return {"seconds": time.perf_counter() - t0}

  def matmul(self, msg):
    torch, n = self.torch, msg["n"]
    a, b = (torch.randn(n, n, device=self.device, dtype=self.compute_dtype) for _ in range(2))
    a @ b
    self._sync()
    t0 = time.perf_counter()
    for _ in range(msg["reps"]):
      a @ b
    self._sync()
    return {"flops_per_s": 2.0 * n**3 * msg["reps"] / (time.perf_counter() - t0)}


def worker_main(spec_json: str) -> None:
  """Serves one side: a JSON request per line on stdin, a JSON reply per line."""
  channel = os.fdopen(os.dup(1), "w")
  os.dup2(2, 1)  # whatever libraries print goes to the log, not into the protocol
  spec = json.loads(spec_json)
  cls = {"jax_train": JaxTrain, "jax_matmul": JaxMatmul, "torch_train": TorchTrain}[spec["kind"]]
  try:
    reply = {"ok": True}
    side = cls(spec)
  except Exception:  # pylint: disable=broad-except
    reply = {"error": traceback.format_exc()}
  channel.write(json.dumps(reply) + "\n")
  channel.flush()
  for line in sys.stdin:
    msg = json.loads(line)
    if msg["cmd"] == "exit":
      break
    try:
      reply = getattr(side, msg["cmd"])(msg)
    except Exception:  # pylint: disable=broad-except
      reply = {"error": traceback.format_exc()}
    channel.write(json.dumps(reply) + "\n")
    channel.flush()
