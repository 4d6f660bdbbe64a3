"""How exact is FGSM's sign in float32? foolingjax, naive JAX and torchattacks vs float64.

  python -m benchmarks.fgsm_precision [--num_images=1000] [--eps=0.1,0.3]

On the bundled FC100-100-10 MNIST net and the first ``num_images`` MNIST test
images, four FGSM (L∞) perturbations are compared with an exact one:

* ``foolingjax``: :func:`foolingjax.attacks.fgsm`, jitted, float32. Its default
  loss is ``log(exp(CE) - 1) = logsumexp_{j != y} z_j - z_y``, whose gradient
  has exactly the cross-entropy gradient's direction;
* ``jax float32 CE``: ``sign(grad(optax.softmax_cross_entropy_with_integer_labels))``
  in float32, the formulation most code writes;
* ``torchattacks``: ``torchattacks.FGSM`` 3.5.1 on a torch copy of the same
  weights (``nn.CrossEntropyLoss``, float32), when installed;
* ``float64 CE``: the same naive ``p - onehot(y)`` gradient in numpy float64.

The reference is the cross-entropy gradient in numpy float64 with the logit
gradient written without cancellation: ``dCE/dz_j = p_j`` for ``j != y`` and
``dCE/dz_y = -sum_{j != y} p_j`` (equal to ``p_y - 1``, which float arithmetic
computes as a difference of two numbers near 1), with ``p_j = exp(z_j -
logsumexp z)``, backpropagated through the ReLU MLP in float64.

For each, printed: the number of images whose perturbation ``sign(adv - x)``
(after the clip to [0, 1]) differs from the reference's anywhere, the number
whose raw input gradient is exactly zero, the number of pixels whose sign
differs (and how many of those lie on images whose float32 softmax of the
label is exactly 1.0), and the accuracy at each ``eps``.
Runs in about a minute on 2 shared CPU cores. torchattacks is an optional peer:
without it its row is skipped.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from foolingjax import attacks, data, zoo


def _layers(params):
  names = [n for n in ("fc1", "fc2", "fc3", "fc4") if n in params] + ["out"]
  return [(np.asarray(params[n]["kernel"], np.float64),
           np.asarray(params[n]["bias"], np.float64)) for n in names]


def float64_gradient(params, x: np.ndarray, y: np.ndarray, *, exact: bool):
  """``(logits [B, K], dCE/dx [B, H, W, C])`` of the ReLU MLP in numpy float64.

  ``exact``: the label's logit gradient is ``-sum_{j != y} p_j`` (no
  cancellation); otherwise ``p_y - 1`` as a plain softmax-minus-one-hot.
  """
  layers = _layers(params)
  h = x.reshape(x.shape[0], -1).astype(np.float64)
  pre = []
  for i, (w, b) in enumerate(layers):
    z = h @ w + b
    pre.append(z)
    h = np.maximum(z, 0.0) if i < len(layers) - 1 else z
  logits = h
  shifted = logits - logits.max(-1, keepdims=True)
  log_p = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
  p = np.exp(log_p)
  onehot = np.eye(logits.shape[-1], dtype=bool)[y]
  if exact:
    g = np.where(onehot, -np.where(onehot, 0.0, p).sum(-1, keepdims=True), p)
  else:
    g = p - onehot
  for i in range(len(layers) - 1, -1, -1):
    w, _ = layers[i]
    g = g @ w.T
    if i > 0:
      g = g * (pre[i - 1] > 0)
  return logits, g.reshape(x.shape)


def measure(num_images: int = 1000, epss=(0.1, 0.3), log=print) -> dict:
  import optax

  clf = zoo.resolve("fc100_100_10_mnist", log=None)
  apply_fn, params = clf.apply_fn, clf.params
  images, labels = data.load("mnist", "test")
  x = jnp.asarray(images[:num_images], jnp.float32) / 255.0
  y = jnp.asarray(labels[:num_images], jnp.int32)
  x_np, y_np = np.asarray(x), np.asarray(y)

  logits64, grad_exact = float64_gradient(params, x_np, y_np, exact=True)
  _, grad_naive64 = float64_gradient(params, x_np, y_np, exact=False)
  logits32 = np.asarray(apply_fn(params, x))
  p_label32 = np.asarray(jax.nn.softmax(jnp.asarray(logits32)))[np.arange(num_images),
                                                                 y_np]
  gap = np.abs(logits64 - logits32).max()
  assert gap < 1e-3, f"the float64 MLP differs from the flax net by {gap}"

  def naive_ce(p, xi, yi):
    return optax.softmax_cross_entropy_with_integer_labels(
        apply_fn(p, xi[None]), yi[None])[0]
  naive_grad = jax.jit(jax.vmap(jax.grad(naive_ce, argnums=1), in_axes=(None, 0, 0)))
  fgsm = jax.jit(lambda p, x, y, eps: attacks.fgsm(apply_fn, p, x, y, eps=eps))
  # foolingjax's own gradient (the one fgsm takes the sign of), for the zero count.
  own_loss = attacks.losses.cross_entropy_direction
  own_grad = jax.jit(jax.vmap(jax.grad(
      lambda p, xi, yi: own_loss(apply_fn(p, xi[None])[0], yi), argnums=1),
      in_axes=(None, 0, 0)))

  grads = {
      "float64 exact (reference)": grad_exact,
      "foolingjax fgsm (float32)": np.asarray(own_grad(params, x, y)),
      "jax float32 CE (optax)": np.asarray(naive_grad(params, x, y)),
      "float64 CE (p - onehot)": grad_naive64,
  }

  def clip_step(direction, eps):
    return np.clip(x_np + eps * direction, 0.0, 1.0).astype(np.float32)

  advs = {name: {eps: clip_step(np.sign(g), eps) for eps in epss}
          for name, g in grads.items()}
  # foolingjax's row is its fgsm output itself, not a re-derivation.
  advs["foolingjax fgsm (float32)"] = {
      eps: np.asarray(fgsm(params, x, y, eps)) for eps in epss}

  try:
    import torch
    import torchattacks

    from benchmarks.bench_attacks import torch_mlp
    model = torch_mlp(params)
    x_t = torch.from_numpy(x_np.transpose(0, 3, 1, 2).copy())
    y_t = torch.from_numpy(y_np.astype(np.int64))
    advs["torchattacks 3.5.1 FGSM"] = {
        eps: torchattacks.FGSM(model, eps=eps)(x_t, y_t).detach().numpy()
        .transpose(0, 2, 3, 1) for eps in epss}
    x_g = x_t.clone().requires_grad_(True)
    loss = torch.nn.CrossEntropyLoss(reduction="sum")(model(x_g), y_t)
    (g_t,) = torch.autograd.grad(loss, x_g)
    grads["torchattacks 3.5.1 FGSM"] = g_t.numpy().transpose(0, 2, 3, 1)
  except ImportError as e:
    log(f"torchattacks skipped ({e})")

  sorted64 = np.sort(logits64, -1)
  results = {
      "num_images": num_images,
      "clean_accuracy": float(np.mean(logits64.argmax(-1) == y_np)),
      "float32_softmax_label_is_1": int(np.sum(p_label32 == 1.0)),
      "max_top2_logit_gap": float((sorted64[:, -1] - sorted64[:, -2]).max()),
      "rows": {},
  }
  reference = {eps: np.sign(advs["float64 exact (reference)"][eps] - x_np)
               for eps in epss}
  for name, by_eps in advs.items():
    row = {"zero_gradient_images": int(np.sum(
        np.all(grads[name].reshape(num_images, -1) == 0, -1)))}
    for eps, adv in by_eps.items():
      pixels = (np.sign(adv - x_np) != reference[eps]).reshape(num_images, -1)
      differs = np.any(pixels, -1)
      row[f"images_differing@{eps}"] = int(differs.sum())
      row[f"pixels_differing@{eps}"] = int(pixels.sum())
      # On the images whose float32 softmax of the label is exactly 1.0.
      row[f"pixels_differing_p1@{eps}"] = int(pixels[p_label32 == 1.0].sum())
      pred = np.asarray(apply_fn(params, jnp.asarray(adv))).argmax(-1)
      row[f"accuracy@{eps}"] = float(np.mean(pred == y_np))
    row["differs"] = differs
    results["rows"][name] = row
  # Where the naive float32 gradient goes wrong: how confident those images are.
  log_p64 = logits64 - np.logaddexp.reduce(logits64, axis=-1, keepdims=True)
  one_minus_p = -np.expm1(log_p64[np.arange(num_images), y_np])
  wrong = results["rows"]["jax float32 CE (optax)"]["differs"]
  threshold = float(one_minus_p[wrong].max(initial=0.0))
  results["naive_wrong_with_p_1"] = int(np.sum(wrong & (p_label32 == 1.0)))
  results["naive_wrong_max_1_minus_p"] = threshold
  results["images_below_that"] = int(np.sum(one_minus_p <= threshold))
  results["min_1_minus_p"] = float(one_minus_p.min())
  for row in results["rows"].values():
    row["differs_count"] = int(row.pop("differs").sum())
  return results


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--num_images", type=int, default=1000)
  parser.add_argument("--eps", default="0.1,0.3")
  args = parser.parse_args()
  epss = tuple(float(e) for e in args.eps.split(","))
  r = measure(args.num_images, epss)
  print(f"FC100-100-10, first {r['num_images']} MNIST test images, clean accuracy "
        f"{r['clean_accuracy']:.3f}; float32 softmax of the label is exactly 1.0 on "
        f"{r['float32_softmax_label_is_1']} images; largest top-2 logit gap "
        f"{r['max_top2_logit_gap']:.1f}")
  print(f"jax float32 CE: of its {r['rows']['jax float32 CE (optax)']['differs_count']} "
        f"wrong images, {r['naive_wrong_with_p_1']} have float32 p_label == 1.0; all "
        f"have float64 1 - p_label <= {r['naive_wrong_max_1_minus_p']:.2g} (as do "
        f"{r['images_below_that']} images in all); smallest float64 1 - p_label "
        f"{r['min_1_minus_p']:.2g}")
  head = ["FGSM L∞", "zero-gradient images"]
  for eps in epss:
    head += [f"images ≠ float64 @ {eps}", f"pixels ≠ (of them p_label = 1) @ {eps}",
             f"accuracy @ {eps}"]
  print("| " + " | ".join(head) + " |")
  print("|" + "---|" * len(head))
  for name, row in r["rows"].items():
    cells = [name, str(row["zero_gradient_images"])]
    for eps in epss:
      cells += [str(row[f"images_differing@{eps}"]),
                f"{row[f'pixels_differing@{eps}']} ({row[f'pixels_differing_p1@{eps}']})",
                f"{row[f'accuracy@{eps}']:.3f}"]
    print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
  main()
