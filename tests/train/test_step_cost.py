"""Frozen means frozen: a method's step skips weight gradients and their optimiser state.

Costs are XLA's own count (`cost_analysis()` of the compiled step) for the same model
and batch, once training the method's parameters alone (a prompt, or prefixes) and once
training every parameter.
"""
import flax.linen as nn
import jax
import numpy as np
import pytest

from prompt_tuning.methods import DeepPrompts, PrefixTuning, PromptTuning, PTuning
from prompt_tuning.models import get_config
from prompt_tuning.models.network import T5
from prompt_tuning.prompts import from_sampled_vocab
from prompt_tuning.train import optimizers, partitioning
from prompt_tuning.train import step as step_lib
from prompt_tuning.train.state import EVERYTHING, merge_params, tree_bytes

PROMPT_LENGTH = 4
BATCH_SIZE, INPUT_LENGTH, TARGET_LENGTH = 4, 32, 8


METHODS = {"prompt": PromptTuning(PROMPT_LENGTH, from_sampled_vocab(50)),
           "prefix": PrefixTuning(PROMPT_LENGTH, hidden_dim=24),  # no frozen kernel is 64 x 24
           "p_tuning": PTuning(PROMPT_LENGTH, "lstm", hidden_size=6),  # nor [*, 24], [12, *]
           "deep_prompts": DeepPrompts(PROMPT_LENGTH)}


@pytest.fixture(scope="module", params=sorted(METHODS))
def setup(request):
  config = get_config("tiny", emb_dim=64, num_encoder_layers=2, num_decoder_layers=2,
                      dropout_rate=0.0)
  frozen = nn.meta.unbox(T5(config).init_params(jax.random.PRNGKey(0)))
  method = METHODS[request.param]
  model = method.build_model(config)
  prompt = nn.meta.unbox(method.init_params(model, frozen, jax.random.PRNGKey(1)))
  rng = np.random.RandomState(0)
  tokens = lambda length: rng.randint(1, config.vocab_size, (BATCH_SIZE, length)).astype(np.int32)
  batch = {"encoder_input_tokens": tokens(INPUT_LENGTH),
           "decoder_input_tokens": tokens(TARGET_LENGTH),
           "decoder_target_tokens": tokens(TARGET_LENGTH)}
  mesh = partitioning.make_mesh((1, 1), jax.devices()[:1])
  abstract = step_lib.abstract_params(model, INPUT_LENGTH, TARGET_LENGTH)
  return model, frozen, prompt, batch, mesh, abstract, method


def _program(setup, trainable):
  model, frozen, prompt, batch, mesh, abstract, _ = setup
  program = step_lib.build(model, optimizers.adafactor(), mesh, abstract, trainable)
  if trainable != EVERYTHING:
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


def test_method_step_costs_well_under_a_full_fine_tuning_step(setup):
  prompt_flops = _flops(*_program(setup, setup[-1].trainable))
  full_flops = _flops(*_program(setup, EVERYTHING))
  assert prompt_flops > 0
  assert prompt_flops < 0.8 * full_flops, (prompt_flops, full_flops)


def test_optimizer_state_holds_the_method_alone(setup):
  _, frozen, prompt, *_ = setup
  _, state, frozen_placed, _ = _program(setup, setup[-1].trainable)
  assert jax.tree.leaves(frozen_placed)  # the frozen weights are an argument, not state
  assert list(state.params) == list(prompt) == [setup[-1].trainable[0].split("/")[0]]
  # Adafactor keeps at most a second-moment per trained entry (plus momentum if enabled).
  assert tree_bytes(state.opt_state) <= 2 * tree_bytes(prompt) + 256
  kernel_shapes = {x.shape for x in jax.tree.leaves(frozen) if x.ndim >= 2}
  opt_shapes = {x.shape for x in jax.tree.leaves(state.opt_state)}
  assert not opt_shapes & kernel_shapes, opt_shapes & kernel_shapes
  _, full_state, _, _ = _program(setup, EVERYTHING)
  # The prefix MLP (width 24, to every layer) is large beside this tiny model: 5x, not 10x.
  assert tree_bytes(full_state.opt_state) > 5 * tree_bytes(state.opt_state)


def test_frozen_weights_stay_bit_identical_while_the_method_trains(setup):
  program, state, frozen_placed, batch = _program(setup, setup[-1].trainable)
  frozen_before = jax.tree.map(np.array, frozen_placed)
  prompt_before = jax.tree.map(np.array, state.params)
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
  moved = jax.tree.map(lambda a, b: np.abs(np.asarray(a) - b).max(), state.params,
                       prompt_before)
  assert min(jax.tree.leaves(moved)) > 1e-6 and max(jax.tree.leaves(moved)) > 1e-3, moved
  assert losses[-1] < losses[0]
