"""Frozen means frozen: the prompt step skips weight gradients and their optimiser state.

Costs are XLA's own count (`cost_analysis()` of the compiled step) for the same model
and batch, once training the prompt alone and once training every parameter.
"""
import flax.linen as nn
import jax
import numpy as np
import pytest

from prompt_tuning.models import get_config
from prompt_tuning.models.network import T5
from prompt_tuning.prompts import from_sampled_vocab, init_prompt_params, prompted_t5
from prompt_tuning.train import optimizers, partitioning
from prompt_tuning.train import step as step_lib
from prompt_tuning.train.state import EVERYTHING, PROMPT_ONLY, merge_params, tree_bytes

PROMPT_LENGTH = 4
BATCH_SIZE, INPUT_LENGTH, TARGET_LENGTH = 4, 32, 8


@pytest.fixture(scope="module")
def setup():
  config = get_config("tiny", emb_dim=64, num_encoder_layers=2, num_decoder_layers=2,
                      dropout_rate=0.0)
  frozen = nn.meta.unbox(T5(config).init_params(jax.random.PRNGKey(0)))
  model = prompted_t5(config, PROMPT_LENGTH, from_sampled_vocab(50))
  prompt = nn.meta.unbox(init_prompt_params(model, frozen, jax.random.PRNGKey(1)))
  rng = np.random.RandomState(0)
  tokens = lambda length: rng.randint(1, config.vocab_size, (BATCH_SIZE, length)).astype(np.int32)
  batch = {"encoder_input_tokens": tokens(INPUT_LENGTH),
           "decoder_input_tokens": tokens(TARGET_LENGTH),
           "decoder_target_tokens": tokens(TARGET_LENGTH)}
  mesh = partitioning.make_mesh((1, 1), jax.devices()[:1])
  abstract = step_lib.abstract_params(model, INPUT_LENGTH, TARGET_LENGTH)
  return model, frozen, prompt, batch, mesh, abstract


def _program(setup, trainable):
  model, frozen, prompt, batch, mesh, abstract = setup
  program = step_lib.build(model, optimizers.adafactor(), mesh, abstract, trainable)
  if trainable == PROMPT_ONLY:
    state, frozen_placed = program.init_state(prompt, frozen)
  else:
    state, frozen_placed = program.init_state(merge_params(frozen, prompt), {})
  return program, state, frozen_placed, program.place_batch(batch)


def _flops(program, state, frozen, batch) -> float:
  with program.context():
    cost = program.jit_train_step.lower(state, frozen, batch).compile().cost_analysis()
  if isinstance(cost, (list, tuple)):  # older jax: one dict per computation
    cost = cost[0]
  return float(cost["flops"])


def test_prompt_step_costs_well_under_a_full_fine_tuning_step(setup):
  prompt_flops = _flops(*_program(setup, PROMPT_ONLY))
  full_flops = _flops(*_program(setup, EVERYTHING))
  assert prompt_flops > 0
  assert prompt_flops < 0.8 * full_flops, (prompt_flops, full_flops)


def test_optimizer_state_holds_the_prompt_alone(setup):
  _, frozen, prompt, *_ = setup
  _, state, frozen_placed, _ = _program(setup, PROMPT_ONLY)
  assert jax.tree.leaves(frozen_placed)  # the frozen weights are an argument, not state
  assert list(state.params) == ["encoder_prompt"]
  # Adafactor keeps at most a second-moment per prompt entry (plus momentum if enabled).
  assert tree_bytes(state.opt_state) <= 2 * tree_bytes(prompt) + 256
  kernel_shapes = {x.shape for x in jax.tree.leaves(frozen) if x.ndim >= 2}
  opt_shapes = {x.shape for x in jax.tree.leaves(state.opt_state)}
  assert not opt_shapes & kernel_shapes, opt_shapes & kernel_shapes
  _, full_state, _, _ = _program(setup, EVERYTHING)
  assert tree_bytes(full_state.opt_state) > 10 * tree_bytes(state.opt_state)


def test_frozen_weights_stay_bit_identical_while_the_prompt_trains(setup):
  program, state, frozen_placed, batch = _program(setup, PROMPT_ONLY)
  frozen_before = jax.tree.map(np.array, frozen_placed)
  prompt_before = np.array(state.params["encoder_prompt"]["prompt"])
  losses = []
  for _ in range(20):
    state, metrics = program.train_step(state, frozen_placed, batch)
    losses.append(float(metrics["loss"]))
  assert int(state.step) == 20
  before = jax.tree_util.tree_leaves_with_path(frozen_before)
  after = jax.tree.leaves(frozen_placed)
  assert len(before) == len(after) > 0
  changed = [jax.tree_util.keystr(path) for (path, old), new in zip(before, after)
             if not np.array_equal(old, np.asarray(new))]
  assert not changed, f"frozen parameters changed: {changed}"
  prompt_after = np.asarray(state.params["encoder_prompt"]["prompt"])
  assert np.abs(prompt_after - prompt_before).max() > 1e-3
  assert losses[-1] < losses[0]
