"""Sharding as data: a `(data, model)` device mesh and one table of logical-axis rules.

Every parameter and activation of the model names its logical axes (`batch`, `embed`,
`mlp`, ...). `LOGICAL_AXIS_RULES` maps those names onto mesh axes, T5X's standard
table plus the prompt's. Shardings for parameters, optimiser state and batches all
derive from it, and `jax.jit` sees them as `in_shardings`/`out_shardings`.
"""
from __future__ import annotations

import logging
from typing import Any, Optional, Sequence

import flax.linen as nn
import gin
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "model")

LOGICAL_AXIS_RULES: tuple[tuple[str, Optional[str]], ...] = (
    ("batch", "data"),
    ("vocab", "model"),
    ("mlp", "model"),
    ("heads", "model"),
    ("joined_kv", "model"),
    ("kv", None),
    ("embed", None),
    ("length", None),
    ("relpos_buckets", None),
    # The prompt is tiny and read by every example: replicate it.
    ("prompt", None),
    ("prompt_embed", None),
    ("prompt_hidden", None),  # P-tuning's prompt encoder
    # Key/value prefixes likewise, their heads split like the attention's (`heads`).
    ("prefix_batch", None),
    ("prefix", None),
    ("prefix_layers", None),
    ("prefix_hidden", None),
)


@gin.configurable
def make_mesh(mesh_shape: Sequence[int] = (-1, 1),
              devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
  """A mesh of `mesh_shape = (data, model)` devices; -1 takes the remaining devices."""
  devices = list(jax.devices() if devices is None else devices)
  shape = list(mesh_shape)
  if len(shape) != 2:
    raise ValueError(f"MESH_SHAPE must be (data, model), got {tuple(mesh_shape)}")
  if shape.count(-1) > 1 or any(s == 0 or s < -1 for s in shape):
    raise ValueError(f"MESH_SHAPE {tuple(mesh_shape)}: sizes must be positive, at most one -1")
  known = int(np.prod([s for s in shape if s != -1]))
  if -1 in shape:
    if len(devices) % known:
      raise ValueError(f"MESH_SHAPE {tuple(mesh_shape)} does not divide the {len(devices)} "
                       "devices")
    shape[shape.index(-1)] = len(devices) // known
  if int(np.prod(shape)) != len(devices):
    raise ValueError(f"MESH_SHAPE {tuple(mesh_shape)} needs {int(np.prod(shape))} devices but "
                     f"there are {len(devices)}; use a shape whose product is {len(devices)}")
  try:
    from jax.experimental import mesh_utils
    grid = mesh_utils.create_device_mesh(shape, devices)
  except (ValueError, NotImplementedError, AssertionError):
    grid = np.asarray(devices).reshape(shape)
  return Mesh(grid, MESH_AXES)


def logical_to_mesh_spec(logical: PartitionSpec, rules=LOGICAL_AXIS_RULES) -> PartitionSpec:
  return nn.logical_to_mesh_axes(tuple(logical), rules)


def _check_divisible(name: str, shape: Sequence[int], spec: PartitionSpec, mesh: Mesh) -> None:
  for dim, axis in zip(shape, spec):
    if axis is None:
      continue
    size = int(np.prod([mesh.shape[a] for a in (axis if isinstance(axis, tuple) else (axis,))]))
    if dim % size:
      raise ValueError(f"{name}: dimension {dim} of shape {tuple(shape)} does not divide over "
                       f"mesh axis {axis!r} of size {size}; change MESH_SHAPE")


def shardings_for(abstract_boxed_tree: Any, mesh: Mesh, rules=LOGICAL_AXIS_RULES) -> Any:
  """`NamedSharding`s for a tree whose leaves are boxed with logical axes (or plain).

  Plain leaves (no logical names, e.g. step counters) are replicated. A dimension that
  does not divide its mesh axis falls back to replication for that dimension, with a
  log line, as T5X does for small vocabularies.
  """
  def one(path, leaf):
    if isinstance(leaf, nn.Partitioned):
      spec = logical_to_mesh_spec(PartitionSpec(*leaf.names), rules)
      shape = leaf.value.shape
      fixed = []
      for dim, axis in zip(shape, spec):
        size = 1 if axis is None else mesh.shape[axis]
        if dim % size:
          logging.info("replicating dimension %d of %s: it does not divide over %r",
                       dim, jax.tree_util.keystr(path), axis)
          axis = None
        fixed.append(axis)
      return NamedSharding(mesh, PartitionSpec(*fixed))
    return NamedSharding(mesh, PartitionSpec())
  return jax.tree_util.tree_map_with_path(one, abstract_boxed_tree,
                                          is_leaf=lambda x: isinstance(x, nn.Partitioned))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Examples split over `data`, every other dimension whole."""
  return NamedSharding(mesh, PartitionSpec("data"))


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
  data = mesh.shape["data"]
  if batch_size % data:
    raise ValueError(f"BATCH_SIZE {batch_size} does not divide over the {data} devices of the "
                     f"mesh's data axis; use a multiple of {data}")


def place(tree: Any, shardings: Any) -> Any:
  """Puts host arrays onto the mesh, each device receiving only its own shard."""
  def put(x, sharding):
    x = np.asarray(x) if not isinstance(x, jax.Array) else x
    if isinstance(x, jax.Array):
      return jax.device_put(x, sharding)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])
  return jax.tree_util.tree_map(put, tree, shardings)


def place_batch(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """A global batch (this process's share of it on multi-host) placed over `data`."""
  sharding = batch_sharding(mesh)
  if jax.process_count() == 1:
    return {k: jax.make_array_from_callback(v.shape, sharding, lambda index, v=v: v[index])
            for k, v in batch.items()}
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}


@gin.configurable
def initialize_distributed(coordinator_address: Optional[str] = None,
                           num_processes: Optional[int] = None,
                           process_id: Optional[int] = None) -> None:
  """Joins a multi-host job through `jax.distributed` (no-op when nothing is given)."""
  if coordinator_address is None and num_processes is None:
    return
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes, process_id=process_id)
