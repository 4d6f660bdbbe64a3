"""Data parallelism over devices and hosts with JAX's own sharding.

Populations and image batches are split along their leading axis over a 1-D
``jax.sharding.Mesh`` (``NamedSharding(mesh, P("data"))``); everything else
(MAP-Elites archive, classifier parameters) is replicated. XLA's SPMD
partitioner inserts the few collectives needed (e.g. the archive insert's
argmax over the population), so every device ends each generation with the
same archive. Across hosts the mesh simply spans ``jax.devices()`` after
``jax.distributed.initialize()``.

>>> mesh = sharding.data_mesh()
>>> x = sharding.shard_batch(images, mesh)        # [B, ...] split over devices
>>> adv = jax.jit(functools.partial(attacks.fgsm, apply_fn, eps=0.1))(params, x, y)
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

AXIS = "data"


def initialize_distributed(**kwargs) -> None:
  """``jax.distributed.initialize`` once (multi-host runs); a no-op if already done."""
  if jax.process_count() > 1:
    return
  try:
    jax.distributed.initialize(**kwargs)
  except RuntimeError as e:
    if "already" not in str(e):
      raise


def data_mesh(devices=None) -> Mesh:
  """A 1-D mesh over ``devices`` (default: all devices of all hosts)."""
  devices = np.asarray(jax.devices() if devices is None else devices)
  return Mesh(devices.reshape(-1), (AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec(AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def check_divisible(n: int, mesh: Mesh, *, what: str) -> None:
  """Rejects a batch that cannot be split evenly over the mesh."""
  d = mesh.devices.size
  if n % d:
    lower, upper = (n // d) * d, -(-n // d) * d
    raise ValueError(
        f"{what} ({n}) must be divisible by the number of devices ({d}) to shard it. "
        f"Fix: use {upper}" + (f" or {lower}" if lower else "") + ", or turn sharding off.")


def shard_batch(tree: Any, mesh: Mesh) -> Any:
  """Places every leaf split along its leading axis (checked for divisibility)."""
  for leaf in jax.tree_util.tree_leaves(tree):
    check_divisible(leaf.shape[0], mesh, what="The batch axis")
  return jax.device_put(tree, batch_sharding(mesh))


def replicate(tree: Any, mesh: Mesh) -> Any:
  return jax.device_put(tree, replicated(mesh))


def constrain_batch(tree: Any, mesh: Mesh | None) -> Any:
  """Inside jit: ask XLA to keep the leading axis split over the mesh."""
  if mesh is None:
    return tree
  return jax.lax.with_sharding_constraint(tree, batch_sharding(mesh))


def describe(mesh: Mesh | None = None) -> str:
  devices = jax.devices() if mesh is None else list(mesh.devices.flat)
  kinds = sorted({d.device_kind for d in devices})
  return (f"{len(devices)} device(s) ({', '.join(kinds)}) on {jax.process_count()} "
          f"host(s), jax {jax.__version__}")
