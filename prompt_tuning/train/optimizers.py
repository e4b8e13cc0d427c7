"""Optimisers and learning-rate schedules, all from optax, all gin-configurable."""
from __future__ import annotations

from typing import Callable, Union

import gin
import jax.numpy as jnp
import optax

Schedule = Union[float, Callable[[int], float]]


@gin.configurable
def constant_schedule(value: float = 0.3) -> Schedule:
  return optax.constant_schedule(value)


@gin.configurable
def rsqrt_schedule(base: float = 1.0, warmup_steps: int = 10_000) -> Schedule:
  """T5's pretraining schedule: `base / sqrt(max(step, warmup_steps))`."""
  if warmup_steps < 1:
    raise ValueError(f"warmup_steps must be >= 1, got {warmup_steps}")
  return lambda step: base * jnp.reciprocal(jnp.sqrt(jnp.maximum(step, warmup_steps)))


@gin.configurable
def adafactor(learning_rate: Schedule = 0.3, decay_rate: float = 0.8,
              weight_decay_rate: float | None = 1e-5, multiply_by_parameter_scale: bool = False,
              clipping_threshold: float | None = 1.0, momentum: float | None = None,
              factored: bool = True) -> optax.GradientTransformation:
  """Adafactor; the defaults are the prompt-tuning paper's (Lester et al. 2021, §3).

  For T5's pretraining bind `learning_rate=@rsqrt_schedule()`,
  `multiply_by_parameter_scale=True`, `weight_decay_rate=None`.
  """
  if callable(learning_rate) is False and learning_rate <= 0:
    raise ValueError(f"learning_rate must be positive, got {learning_rate}")
  return optax.adafactor(learning_rate=learning_rate, decay_rate=decay_rate,
                         weight_decay_rate=weight_decay_rate,
                         multiply_by_parameter_scale=multiply_by_parameter_scale,
                         clipping_threshold=clipping_threshold, momentum=momentum,
                         factored=factored)
