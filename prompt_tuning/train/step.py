"""One compiled train step: the loss, gradients of the trainable part only, optax update.

    program = build(model, tx, mesh, abstract_params, trainable=method.trainable)
    state, frozen = program.init_state(params)           # placed on the mesh
    state, metrics = program.train_step(state, frozen, batch)

`train_step` is one `jax.jit` with `in_shardings`/`out_shardings` from the logical-axis
rules and the state donated, so XLA sees the whole step. The loss is differentiated
with respect to `state.params` (the trainable tree) alone: XLA never computes a frozen
weight's gradient and the optimiser holds state for the trainable part only.
"""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from prompt_tuning.models import losses
from prompt_tuning.models.network import T5
from prompt_tuning.train import partitioning
from prompt_tuning.train.state import TrainState, merge_params, split_params

Batch = dict[str, jax.Array]
BATCH_KEYS = ("encoder_input_tokens", "decoder_input_tokens", "decoder_target_tokens")
# Read when present: explicit loss weights, packed rows' segment ids (seqio pack=True) and
# each example's task id (per-task prompts in a mixed batch).
OPTIONAL_BATCH_KEYS = ("decoder_loss_weights", "encoder_segment_ids", "decoder_segment_ids",
                       "task_ids")


def model_features(features: dict[str, Any]) -> dict[str, Any]:
  """The features of a seqio batch that `compute_loss` reads; drops the rest (e.g.
  packing's `*_positions`, which relative attention does not need)."""
  missing = [k for k in BATCH_KEYS if k not in features]
  if missing:
    raise KeyError(f"the batch lacks {missing}; it has {sorted(features)}")
  return {k: v for k, v in features.items() if k in BATCH_KEYS + OPTIONAL_BATCH_KEYS}


@gin.configurable
@dataclasses.dataclass(frozen=True)
class LossConfig:
  """T5X's loss options. The loss is normalised per real target token."""
  z_loss: float = 1e-4
  label_smoothing: float = 0.0
  enable_dropout: bool = True  # on in training, as T5X's fine-tuning


def compute_loss(model: T5, params: Any, batch: Batch, loss_config: LossConfig,
                 dropout_rng: Optional[jax.Array], train: bool) -> tuple[jax.Array, dict]:
  """Mean per-token loss over real targets and summed metrics for logging."""
  dropout = train and loss_config.enable_dropout
  logits = model.apply({"params": params}, batch["encoder_input_tokens"],
                       batch["decoder_input_tokens"], batch["decoder_target_tokens"],
                       enable_dropout=dropout, task_ids=batch.get("task_ids"),
                       encoder_segment_ids=batch.get("encoder_segment_ids"),
                       decoder_segment_ids=batch.get("decoder_segment_ids"),
                       rngs={"dropout": dropout_rng} if dropout else None)
  targets = batch["decoder_target_tokens"]
  weights = batch.get("decoder_loss_weights", targets > 0).astype(jnp.float32)
  token_loss, token_z = losses.cross_entropy(logits, targets, loss_config.z_loss,
                                             loss_config.label_smoothing)
  num_tokens = jnp.sum(weights)
  loss = jnp.sum(token_loss * weights) / jnp.maximum(num_tokens, 1.0)
  correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32) * weights
  metrics = {"loss": loss, "z_loss": jnp.sum(token_z * weights) / jnp.maximum(num_tokens, 1.0),
             "token_accuracy": jnp.sum(correct) / jnp.maximum(num_tokens, 1.0),
             "num_target_tokens": num_tokens}
  return loss, metrics


@dataclasses.dataclass
class TrainProgram:
  """The compiled step functions and the shardings they were built with."""
  model: T5
  tx: optax.GradientTransformation
  mesh: Mesh
  trainable: Sequence[str]
  rules: Any
  state_shardings: Any
  frozen_shardings: Any
  jit_train_step: Any  # jax.jit(...) of (state, frozen, batch) -> (state, metrics)
  jit_eval_step: Any   # jax.jit(...) of (state, frozen, batch) -> metrics

  def context(self):
    """The mesh and logical-axis rules under which the steps trace."""
    stack = contextlib.ExitStack()
    stack.enter_context(jax.set_mesh(self.mesh))
    stack.enter_context(nn.logical_axis_rules(self.rules))
    return stack

  def train_step(self, state: TrainState, frozen: Any, batch: Batch):
    with self.context():
      return self.jit_train_step(state, frozen, batch)

  def eval_step(self, state: TrainState, frozen: Any, batch: Batch) -> dict:
    with self.context():
      return self.jit_eval_step(state, frozen, batch)

  def init_state(self, trainable_params: Any, frozen_params: Any) -> tuple[TrainState, Any]:
    """Places host parameters on the mesh (each device reads its own shard) + opt state."""
    params = partitioning.place(trainable_params, self.state_shardings.params)
    frozen = partitioning.place(frozen_params, self.frozen_shardings)
    init = jax.jit(lambda p: TrainState.create(p, self.tx), out_shardings=self.state_shardings)
    return init(params), frozen

  def place_batch(self, batch: dict[str, np.ndarray]) -> Batch:
    return partitioning.place_batch(batch, self.mesh)


def build(model: T5, tx: optax.GradientTransformation, mesh: Mesh, abstract_params: Any,
          trainable: Sequence[str], loss_config: LossConfig = LossConfig(),
          learning_rate: Optional[Callable[[Any], Any]] = None, seed: int = 0,
          rules=partitioning.LOGICAL_AXIS_RULES) -> TrainProgram:
  """Builds the jitted train and eval steps for `model` on `mesh`.

  `abstract_params` is the boxed tree of `jax.eval_shape(model.init, ...)["params"]`:
  its logical axis names give every parameter's sharding. Dropout keys derive from
  `(seed, step)`, so a resumed run draws the same masks as an uninterrupted one.
  """
  shardings = partitioning.shardings_for(abstract_params, mesh, rules)
  train_shardings, frozen_shardings = split_params(shardings, trainable)
  abstract_train, _ = split_params(nn.meta.unbox(abstract_params), trainable)
  replicated = NamedSharding(mesh, PartitionSpec())

  abstract_opt = jax.eval_shape(tx.init, abstract_train)
  opt_shardings = optax.tree_map_params(
      tx, lambda leaf, param, sharding: sharding if leaf.shape == param.shape else replicated,
      abstract_opt, abstract_train, train_shardings,
      transform_non_params=lambda _: replicated)
  state_shardings = TrainState(step=replicated, params=train_shardings, opt_state=opt_shardings)
  batch_sharding = partitioning.batch_sharding(mesh)
  base_rng = jax.random.PRNGKey(seed)

  def train_step(state: TrainState, frozen: Any, batch: Batch):
    dropout_rng = jax.random.fold_in(base_rng, state.step)

    def loss_fn(trainable_params):
      params = merge_params(frozen, trainable_params)
      return compute_loss(model, params, batch, loss_config, dropout_rng, train=True)

    (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics["grad_norm"] = optax.tree.norm(grads)
    if learning_rate is not None:
      metrics["learning_rate"] = jnp.asarray(learning_rate(state.step), jnp.float32)
    return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics

  def eval_step(state: TrainState, frozen: Any, batch: Batch):
    params = merge_params(frozen, state.params)
    return compute_loss(model, params, batch, loss_config, None, train=False)[1]

  jit_train = jax.jit(train_step, in_shardings=(state_shardings, frozen_shardings,
                                                batch_sharding),
                      out_shardings=(state_shardings, replicated), donate_argnums=(0,))
  jit_eval = jax.jit(eval_step, in_shardings=(state_shardings, frozen_shardings,
                                              batch_sharding), out_shardings=replicated)
  return TrainProgram(model, tx, mesh, tuple(trainable), rules, state_shardings,
                      frozen_shardings, jit_train, jit_eval)


def abstract_params(model: T5, input_length: int = 8, target_length: int = 4) -> Any:
  """The boxed parameter tree of `model` (shapes and logical axes only, no memory)."""
  enc = jax.ShapeDtypeStruct((1, input_length), jnp.int32)
  dec = jax.ShapeDtypeStruct((1, target_length), jnp.int32)
  return jax.eval_shape(lambda e, d: model.init(jax.random.PRNGKey(0), e, d),
                        enc, dec)["params"]
