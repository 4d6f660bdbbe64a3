"""foolingjax's attacks, jitted, against torchattacks on the same net and images (CPU).

  python -m benchmarks.bench_attacks [--num_images=1000] [--eps=0.05] [--rounds=2]
      [--square_queries=1000] [--deepfool_images=100]

The bundled FC100-100-10 MNIST net is exported to a ``torch.nn.Sequential``
(identical logits, checked), and both libraries attack the first
``num_images`` MNIST test images:

* PGD-20 L∞ (step eps / 4, random start), APGD-CE-100 L∞ and Square L∞ (1000
  queries): robust accuracy at ``eps``;
* C&W L2 with ``c = 1``, 50 Adam steps, no search over ``c`` (torchattacks'
  defaults; foolingjax's search switched off to match) and DeepFool L2 (50
  steps, overshoot 0.02): success rate and median L2 of the successes, DeepFool
  on the first ``deepfool_images`` only (torchattacks loops over images in
  Python, about a second per image here).

JAX is timed after one compiling call and torchattacks after one warm-up call
on 8 images (both printed apart). Small-batch torch on a loaded machine is
fragile: with other processes keeping the load average above the core count,
torch's PGD/APGD ran ~40x slower than on the idle machine (OpenMP threads
waiting on descheduled peers, as far as we can tell), while JAX barely moved.
Read the ratios with the load column; ``--torch_threads=1`` is the knob to try.
Contenders run round-robin, best of ``rounds`` wall-clock times; beside each
are its CPU time (``time.process_time``, all threads) and the load average,
since the machine is shared. torchattacks is an optional peer for this
benchmark only: the library never imports it.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from foolingjax import attacks, data, zoo


def torch_mlp(params):
  """The zoo's flax MLP as a torch ``Sequential`` (flax Dense kernels are [in, out])."""
  import torch
  layers = []
  names = [name for name in ("fc1", "fc2", "fc3", "fc4") if name in params] + ["out"]
  for i, name in enumerate(names):
    kernel = np.asarray(params[name]["kernel"])
    linear = torch.nn.Linear(*kernel.shape)
    with torch.no_grad():
      linear.weight.copy_(torch.from_numpy(kernel.T.copy()))
      linear.bias.copy_(torch.from_numpy(np.asarray(params[name]["bias"]).copy()))
    layers.append(linear)
    if i < len(names) - 1:
      layers.append(torch.nn.ReLU())
  # NCHW with one channel flattens in the same order as NHWC.
  return torch.nn.Sequential(torch.nn.Flatten(), *layers).eval()


def _timed(fn, *args):
  """``(fn(*args) ready, wall s, CPU s, load average at the start)``."""
  cpu0, wall0, load = time.process_time(), time.perf_counter(), os.getloadavg()[0]
  out = jax.block_until_ready(fn(*args))
  return out, time.perf_counter() - wall0, time.process_time() - cpu0, load


def measure(num_images: int = 1000, eps: float = 0.05, rounds: int = 2,
            square_queries: int = 1000, deepfool_images: int = 100,
            log=print) -> dict:
  import torch
  import torchattacks

  clf = zoo.resolve("fc100_100_10_mnist", log=None)
  apply_fn, params = clf.apply_fn, clf.params
  images, labels = data.load("mnist", "test")
  x = jnp.asarray(images[:num_images], jnp.float32) / 255.0
  y = jnp.asarray(labels[:num_images], jnp.int32)
  model = torch_mlp(params)
  x_t = torch.from_numpy(np.asarray(x).transpose(0, 3, 1, 2).copy())
  y_t = torch.from_numpy(np.asarray(y).astype(np.int64))
  with torch.no_grad():
    gap = np.abs(model(x_t).numpy() - np.asarray(apply_fn(params, x))).max()
  assert gap < 1e-3, f"exported torch net differs from the flax net by {gap}"
  key = jax.random.key(0)

  jax_fns = {
      "pgd20": jax.jit(lambda p, x, y: attacks.pgd(
          key, apply_fn, p, x, y, eps=eps, step_size=eps / 4, steps=20)),
      "apgd100": jax.jit(lambda p, x, y: attacks.apgd(
          key, apply_fn, p, x, y, eps=eps, steps=100)[0]),
      "square": jax.jit(lambda p, x, y: attacks.square(
          key, apply_fn, p, x, y, eps=eps, queries=square_queries)[0]),
      "cw": jax.jit(lambda p, x, y: attacks.carlini_wagner_l2(
          apply_fn, p, x, y, c_init=1.0, binary_search_steps=1, steps=50,
          learning_rate=0.01)[0]),
      "deepfool": jax.jit(lambda p, x, y: attacks.deepfool(
          apply_fn, p, x, y, max_iter=50, overshoot=0.02)[0]),
  }
  torch_attacks = {
      "pgd20": torchattacks.PGD(model, eps=eps, alpha=eps / 4, steps=20),
      "apgd100": torchattacks.APGD(model, norm="Linf", eps=eps, steps=100, loss="ce"),
      "square": torchattacks.Square(model, norm="Linf", eps=eps,
                                    n_queries=square_queries),
      "cw": torchattacks.CW(model, c=1.0, kappa=0.0, steps=50, lr=0.01),
      "deepfool": torchattacks.DeepFool(model, steps=50, overshoot=0.02),
  }
  bounded = ("pgd20", "apgd100", "square")
  clean_acc = float(jnp.mean(jnp.argmax(apply_fn(params, x), -1) == y))
  results = {"clean_accuracy": clean_acc}
  for name, jax_fn in jax_fns.items():
    torch_attack = torch_attacks[name]
    # torchattacks' DeepFool loops over images in Python: a subset keeps it short.
    n = min(deepfool_images, num_images) if name == "deepfool" else num_images
    xs, ys, xs_t, ys_t = x[:n], y[:n], x_t[:n], y_t[:n]
    _, compile_s, _, _ = _timed(jax_fn, params, xs, ys)
    # torch's first call pays one-off set-up (seconds): warm it up too.
    _, torch_first_s, _, _ = _timed(torch_attack, xs_t[:8], ys_t[:8])
    best = {"jax": (np.inf, 0.0, 0.0), "torch": (np.inf, 0.0, 0.0)}
    advs = {}
    for _ in range(rounds):
      adv_j, wall, cpu, load = _timed(jax_fn, params, xs, ys)
      best["jax"] = min(best["jax"], (wall, cpu, load))
      adv_t, wall, cpu, load = _timed(torch_attack, xs_t, ys_t)
      best["torch"] = min(best["torch"], (wall, cpu, load))
      advs = {"jax": np.asarray(adv_j),
              "torch": adv_t.detach().numpy().transpose(0, 2, 3, 1)}
    row = {"jax_compile_s": compile_s, "torch_first_call_s": torch_first_s,
           "images": n}
    for who, adv in advs.items():
      logits = np.asarray(apply_fn(params, jnp.asarray(adv)))
      fooled = logits.argmax(-1) != np.asarray(ys)
      delta = (adv - np.asarray(xs)).reshape(n, -1)
      wall, cpu, load = best[who]
      row[who] = {"wall_s": wall, "cpu_s": cpu, "load": load,
                  "images_per_s": n / wall}
      if name in bounded:
        row[who]["robust_accuracy"] = float(np.mean(~fooled))
        row[who]["max_linf"] = float(np.abs(delta).max())
      else:
        l2 = np.linalg.norm(delta, axis=-1)
        row[who]["success_rate"] = float(np.mean(fooled))
        row[who]["median_l2"] = float(np.median(l2[fooled])) if fooled.any() else np.nan
    row["speedup_jax_over_torch"] = best["torch"][0] / best["jax"][0]
    results[name] = row
    log(_format(name, row))
  return results


def _format(name: str, row: dict) -> str:
  head = (f"{name} ({row['images']} images): jax compile {row['jax_compile_s']:.1f} s, "
          f"torch first call (8 images) {row['torch_first_call_s']:.1f} s")
  lines = [head]
  for who in ("jax", "torch"):
    r = row[who]
    quality = (f"robust acc {r['robust_accuracy']:.3f} (max Linf {r['max_linf']:.4f})"
               if "robust_accuracy" in r else
               f"success {r['success_rate']:.3f}, median L2 {r['median_l2']:.3f}")
    lines.append(f"  {who:5s} {quality}; wall {r['wall_s']:.2f} s, CPU "
                 f"{r['cpu_s']:.2f} s, load {r['load']:.2f}, "
                 f"{r['images_per_s']:,.0f} images/s")
  lines.append(f"  {name}: ratio torchattacks / foolingjax wall time: "
               f"{row['speedup_jax_over_torch']:.2f}x")
  return "\n".join(lines)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--num_images", type=int, default=1000)
  parser.add_argument("--eps", type=float, default=0.05)
  parser.add_argument("--rounds", type=int, default=2)
  parser.add_argument("--square_queries", type=int, default=1000)
  parser.add_argument("--deepfool_images", type=int, default=100)
  parser.add_argument("--torch_threads", type=int, default=0,
                      help="torch.set_num_threads; 0 keeps torch's default")
  args = parser.parse_args()
  try:
    import torch
    import torchattacks
  except ImportError as e:
    print(f"skipped: the peer is not installed ({e}); "
          "pip install --no-deps torchattacks==3.5.1 next to torch")
    return
  if args.torch_threads:
    torch.set_num_threads(args.torch_threads)
  cpu0, load0, wall0 = time.process_time(), os.getloadavg()[0], time.perf_counter()
  print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"jax {jax.__version__} on {jax.devices()[0].device_kind}, torch "
        f"{torch.__version__} ({torch.get_num_threads()} threads), torchattacks "
        f"{torchattacks.__version__}")
  result = measure(args.num_images, args.eps, args.rounds, args.square_queries,
                   args.deepfool_images)
  print(f"FC100-100-10 MNIST, {args.num_images} test images, clean accuracy "
        f"{result['clean_accuracy']:.3f}, L-inf eps {args.eps}")
  print(f"this benchmark: wall {time.perf_counter() - wall0:.1f} s, CPU "
        f"{time.process_time() - cpu0:.1f} s, load average {load0:.2f} -> "
        f"{os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
  main()
