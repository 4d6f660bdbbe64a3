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


def initialize_distributed(*, coordinator_address: str | None = None,
                           num_processes: int | None = None, process_id: int | None = None,
                           cpu_collectives: str | None = "gloo") -> None:
  """``jax.distributed.initialize`` once (multi-host runs); a no-op if already done.

  Call it before anything starts JAX's backend (``jax.devices()``,
  ``jax.process_count()``, any array): the backend must be created knowing
  its peers. The arguments left None are found by JAX (its
  ``JAX_COORDINATOR_ADDRESS`` variable, or a cluster's environment: SLURM,
  Open MPI, Cloud TPU). ``cpu_collectives`` picks the CPU client's collective
  library ("gloo" works between processes of one or several machines; None
  keeps JAX's default, which has none across processes), so CPU-only hosts
  can run sharded code too; accelerators are unaffected.
  """
  if jax.distributed.is_initialized():
    return
  if cpu_collectives is not None:
    jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
  try:
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id)
  except RuntimeError as e:
    if "should only be called once" in str(e) or "already" in str(e):
      return
    raise RuntimeError(
        f"jax.distributed.initialize failed: {e}. Fix: call initialize_distributed before "
        "anything touches jax.devices() or creates an array, and give every process the "
        "same coordinator_address and num_processes and its own process_id.") from e


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
  """Places every leaf split along its leading axis (checked for divisibility).

  On a mesh spanning several processes each process passes the whole batch
  (the same values everywhere) and keeps the slices of its own devices.
  """
  for leaf in jax.tree_util.tree_leaves(tree):
    check_divisible(leaf.shape[0], mesh, what="The batch axis")
  return _put(tree, batch_sharding(mesh))


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Places every leaf whole on every device of ``mesh``.

  On a mesh spanning several processes each process must pass the same
  values; every leaf (PRNG keys too) is assembled from this process's copy.
  """
  return _put(tree, replicated(mesh))


def _put(tree: Any, sharding: NamedSharding) -> Any:
  """``device_put``, or, on a mesh spanning processes, each leaf assembled from
  this process's copy (PRNG keys through their key data)."""
  if sharding.is_fully_addressable:
    return jax.device_put(tree, sharding)

  def put(leaf):
    if jax.dtypes.issubdtype(getattr(leaf, "dtype", None), jax.dtypes.prng_key):
      impl = jax.random.key_impl(leaf)
      return jax.random.wrap_key_data(put(jax.random.key_data(leaf)), impl=impl)
    host = np.asarray(jax.device_get(leaf))
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

  return jax.tree_util.tree_map(put, tree)


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
