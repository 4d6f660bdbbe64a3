"""Square Attack (Andriushchenko, Croce, Flammarion & Hein 2020), L∞ and L2.

A score-based attack: it reads only the logits, never a gradient. Each step
proposes a random change on one square window of side ``s`` and keeps it when
the margin loss ``z_y - max_{j != y} z_j`` (untargeted; ``max_{j != t} z_j -
z_t`` targeted) goes down. ``s = round(sqrt(p * H * W))``, where the fraction
``p`` starts at ``p_init`` and is halved after 10, 50, 200, 500, 1000, 2000,
4000, 6000 and 8000 iterations of a 10 000-query budget (rescaled to the budget
given). L∞ proposals set the window to ``±2 eps`` per channel (then project);
L2 proposals move mass between two windows with the paper's centred
"sum of nested squares" pattern, staying on the sphere of radius ``eps``.

Windows are built from masks of the full image, so ``s`` can change under
``jit``; every image draws its own windows from its own key. The loop is a
``lax.while_loop``: an image stops at its first success, and its query count
(one per forward pass, the start included) stops with it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from foolingjax import checks
from foolingjax.attacks import _common

# Iterations (of 10 000) after which p is halved; rescaled to the budget.
_HALVINGS = np.array([10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000])


@struct.dataclass
class SquareInfo:
  """What :func:`square` found; each leaf has shape ``[B]`` (``[E, B]`` for vector eps).

  Attributes:
    success: the returned image fools the classifier.
    queries: forward passes spent on the image (start included).
    margin: the margin loss at the returned image (negative on success).
  """

  success: jax.Array
  queries: jax.Array
  margin: jax.Array


def p_schedule(iteration: jax.Array, *, queries: int, p_init: float) -> jax.Array:
  """The fraction ``p`` of pixels a window covers at ``iteration`` (0-based)."""
  # Integer arithmetic: in float32 51 / 10000 * 10000 rounds down to 50.
  scaled = (jnp.asarray(iteration, jnp.int32) * 10000) // queries
  halvings = jnp.searchsorted(jnp.asarray(_HALVINGS), scaled, side="left")
  return p_init / 2.0 ** halvings


def _nested_squares_cumsum(size: int) -> jax.Array:
  """``H(j) = sum_{k < j} 1 / (k + 1)^2`` for ``j = 0..size``."""
  return jnp.concatenate([jnp.zeros(1), jnp.cumsum(1.0 / jnp.arange(1, size + 1) ** 2)])


def _l2_pattern(rows, cols, s, transpose, cumsum):
  """The paper's L2 window pattern of side ``s`` on coordinates relative to it.

  Two stacked rectangles (heights ``s // 2`` and ``s - s // 2``, width ``s``)
  of opposite sign, each a sum of squares centred on it with weights
  ``1 / (k + 1)^2``, each normalised, then the whole normalised; transposed
  when ``transpose``. Zero outside ``0 <= rows, cols < s``.
  """
  rows, cols = jnp.where(transpose, cols, rows), jnp.where(transpose, rows, cols)
  inside = (rows >= 0) & (rows < s) & (cols >= 0) & (cols < s)
  top_height = s // 2
  upper = rows < top_height
  local_row = jnp.where(upper, rows, rows - top_height)
  height = jnp.where(upper, top_height, s - top_height)
  depth = jnp.maximum(jnp.abs(local_row - height // 2), jnp.abs(cols - s // 2))
  last = s // 2 + 1
  value = cumsum[last] - cumsum[jnp.clip(depth, 0, last)]
  value = jnp.where(inside & (depth < last), value, 0.0)
  top = jnp.where(upper, value, 0.0)
  bottom = jnp.where(upper, 0.0, value)
  top = top / jnp.maximum(jnp.sqrt(jnp.sum(top ** 2)), _common.TINY)
  bottom = bottom / jnp.maximum(jnp.sqrt(jnp.sum(bottom ** 2)), _common.TINY)
  pattern = top - bottom
  return pattern / jnp.maximum(jnp.sqrt(jnp.sum(pattern ** 2)), _common.TINY)


@struct.dataclass
class _State:
  i: jax.Array
  x_best: jax.Array
  margin: jax.Array
  queries: jax.Array


def square_core(apply_fn, params, *, norm: str, queries: int, p_init: float,
                targeted: bool, image_shape):
  """The per-image Square Attack, for :func:`square` and :func:`auto_attack`.

  Returns:
    ``run(key, x [H, W, C], label, active, eps) -> (adv, fooled, margin,
    queries)``; an inactive image comes back clean, unqueried.
  """
  height, width, channels = image_shape
  n_features = height * width * channels
  cumsum = _nested_squares_cumsum(max(height, width) + 2)
  row_grid = jnp.arange(height)[:, None] * jnp.ones((1, width), jnp.int32)
  col_grid = jnp.ones((height, 1), jnp.int32) * jnp.arange(width)[None, :]

  def margin_of(x_adv, label):
    logits = apply_fn(params, x_adv[None])[0]
    m = _common.margin(logits, label)
    return -m if targeted else m

  def window(key, s):
    k_h, k_w = jax.random.split(key)
    top = jax.random.randint(k_h, (), 0, height - s + 1)
    left = jax.random.randint(k_w, (), 0, width - s + 1)
    return row_grid - top, col_grid - left

  def side(i, minimum):
    p = p_schedule(i, queries=queries, p_init=p_init)
    s = jnp.round(jnp.sqrt(p * n_features / channels)).astype(jnp.int32)
    s = jnp.maximum(s, minimum)
    if minimum == 3:  # the L2 pattern wants an odd side
      s = s + (s % 2 == 0)
    return jnp.minimum(s, min(height, width))

  def propose_linf(key, xi, x_best, eps, i):
    s = side(i, 1)
    k_win, k_sign = jax.random.split(key)
    rows, cols = window(k_win, s)
    inside = ((rows >= 0) & (rows < s) & (cols >= 0) & (cols < s))[..., None]
    signs = jax.random.rademacher(k_sign, (1, 1, channels), jnp.float32)
    x_new = jnp.where(inside, x_best + 2.0 * eps * signs, x_best)
    return jnp.clip(jnp.clip(x_new, xi - eps, xi + eps), 0.0, 1.0)

  def propose_l2(key, xi, x_best, eps, i):
    s = side(i, 3)
    k_win, k_win2, k_sign, k_flip = jax.random.split(key, 4)
    rows, cols = window(k_win, s)
    rows2, cols2 = window(k_win2, s)
    in1 = ((rows >= 0) & (rows < s) & (cols >= 0) & (cols < s))[..., None]
    in2 = ((rows2 >= 0) & (rows2 < s) & (cols2 >= 0) & (cols2 < s))[..., None]
    delta = x_best - xi
    # Per-channel norms of the current perturbation on window 1 and on both.
    norm_window1 = jnp.sqrt(jnp.sum(jnp.where(in1, delta, 0.0) ** 2, axis=(0, 1),
                                    keepdims=True))
    norm_windows = jnp.sqrt(jnp.sum(jnp.where(in1 | in2, delta, 0.0) ** 2,
                                    axis=(0, 1), keepdims=True))
    norm_image = _common.norm_of(delta, "l2")
    pattern = _l2_pattern(rows, cols, s, jax.random.bernoulli(k_flip), cumsum)
    signs = jax.random.rademacher(k_sign, (1, 1, channels), jnp.float32)
    new = pattern[..., None] * signs + jnp.where(in1, delta, 0.0) / (
        norm_window1 + _common.TINY)
    new = jnp.where(in1, new, 0.0)
    new_norm = jnp.sqrt(jnp.sum(new ** 2, axis=(0, 1), keepdims=True))
    budget = jnp.sqrt(jnp.maximum(eps ** 2 - norm_image ** 2, 0.0) / channels
                      + norm_windows ** 2)
    new = new / (new_norm + _common.TINY) * budget
    delta = jnp.where(in1, new, jnp.where(in2, 0.0, delta))
    delta = delta / (_common.norm_of(delta, "l2") + _common.TINY) * eps
    return jnp.clip(xi + delta, 0.0, 1.0)

  propose = propose_linf if norm == "linf" else propose_l2

  def start(key, xi, eps):
    if norm == "linf":  # vertical stripes of ±eps, per column and channel
      stripes = jax.random.rademacher(key, (1, width, channels), jnp.float32)
      return jnp.clip(xi + eps * stripes, 0.0, 1.0)
    # A 5 x 5 grid of the L2 pattern with random signs per tile and channel.
    tile = max(height // 5, 1)
    offset = (height - tile * 5) // 2
    rows = (row_grid - offset) % tile
    cols = (col_grid - offset) % tile
    tile_row = (row_grid - offset) // tile
    tile_col = (col_grid - offset) // tile
    in_grid = (row_grid >= offset) & (tile_row < height // tile) & (
        col_grid >= offset) & (tile_col < width // tile)
    pattern = _l2_pattern(rows, cols, tile, False, cumsum)
    n_tiles = (height // tile + 1) * (width // tile + 1)
    signs = jax.random.rademacher(key, (n_tiles, channels), jnp.float32)
    tile_index = jnp.clip(tile_row, 0) * (width // tile + 1) + jnp.clip(tile_col, 0)
    delta = jnp.where(in_grid[..., None], pattern[..., None] * signs[tile_index], 0.0)
    delta = delta / (_common.norm_of(delta, "l2") + _common.TINY) * eps
    return jnp.clip(xi + delta, 0.0, 1.0)

  def run(key, xi, label, active, eps):
    k_start, k_loop = jax.random.split(key)
    x0 = start(k_start, xi, eps)
    state = _State(i=jnp.array(0), x_best=x0, margin=margin_of(x0, label),
                   queries=jnp.array(1))

    def keep_going(s):
      return active & (s.i < queries - 1) & (s.margin >= 0)

    def body(s):
      x_new = propose(jax.random.fold_in(k_loop, s.i), xi, s.x_best, eps, s.i)
      m = margin_of(x_new, label)
      better = m < s.margin
      return _State(i=s.i + 1, x_best=jnp.where(better, x_new, s.x_best),
                    margin=jnp.where(better, m, s.margin), queries=s.queries + 1)

    s = jax.lax.while_loop(keep_going, body, state)
    fooled = active & (s.margin < 0)
    return (jnp.where(active, s.x_best, xi), fooled,
            s.margin, jnp.where(active, s.queries, 0))

  return run


def square(key: jax.Array, apply_fn, params, x: jax.Array, labels: jax.Array, *, eps,
           norm: str = "linf", queries: int = 5000, p_init: float = 0.8,
           targeted: bool = False) -> tuple[jax.Array, SquareInfo]:
  """Square Attack, score-based (logits only), per image stopped at success.

  Args:
    key: PRNG key (one stream per image).
    apply_fn: classifier ``apply_fn(params, x) -> logits [B, K]``.
    params: its parameters.
    x: float32 ``[B, H, W, C]`` in [0, 1].
    labels: int ``[B]`` true labels, or targets when ``targeted``.
    eps: radius of the L∞ or L2 ball, a scalar or a vector ``[E]`` (one
      compiled call; the results gain a leading ``[E]`` axis; the same key
      for every radius, so each slice equals a separate call).
    norm: ``"linf"`` or ``"l2"``.
    queries: forward-pass budget per image (Python int >= 1), the start
      included.
    p_init: initial fraction of the image a square covers (``0 < p <= 1``).
    targeted: reach ``labels`` instead of leaving them.

  Returns:
    ``(adv, info)``: ``[B, H, W, C]`` (``[E, B, H, W, C]`` for vector eps) in
    the ball and the box (the best point found; the first fooling one where
    the attack succeeded) and a :class:`SquareInfo`.
  """
  who = "square"
  x, labels, _ = _common.validate(who, apply_fn, params, x, labels,
                                  name="targets" if targeted else "labels")
  eps, vector = _common.check_eps(eps, who=who, norm=norm)
  queries = _common.check_int(queries, name="queries", who=who)
  checks.nonnegative(p_init, name="p_init", who=who, upper=1.0, strict=True)
  run = square_core(apply_fn, params, norm=norm, queries=queries, p_init=p_init,
                    targeted=targeted, image_shape=x.shape[1:])
  keys = jax.random.split(key, x.shape[0])
  active = jnp.ones((x.shape[0],), bool)

  def attack(eps):
    adv, fooled, margin, spent = jax.vmap(run, in_axes=(0, 0, 0, 0, None))(
        keys, x, labels, active, eps)
    return adv, SquareInfo(success=fooled, queries=spent, margin=margin)
  return _common.map_eps(attack, eps, vector)
