import os
import pathlib
import tempfile

# Many tests compile the same programs: the fool smoke run in-process, in
# subprocesses (the CLI, two-process runs, notebooks) and in several files.
# JAX's persistent compilation cache, keyed on the program, the jax version and
# its flags, lets each compile once per machine. Set before jax is imported so
# the subprocesses the tests start inherit it; the size bound turns on the
# cache's file lock, which the two test workers share. FOOLINGJAX_TEST_JAX_CACHE=0
# turns it off; a JAX_COMPILATION_CACHE_DIR of your own is kept.
if os.environ.get("FOOLINGJAX_TEST_JAX_CACHE", "1") != "0":
  os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(
      tempfile.gettempdir(), f"foolingjax-test-jax-cache-{os.getuid()}"))
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
  os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(4 << 30))

# Most tests run small programs a few times, so XLA:CPU's compile time is most of
# their cost: LLVM's optimisation level 0 compiles them faster (198 -> 125 s for
# test_fool_experiment, test_robust and test_cli at -n 2, cache off). Tests compare
# results computed under the same flags; FOOLINGJAX_TEST_XLA_OPT=default keeps
# XLA's default level (benchmarks and experiments never see this setting).
if os.environ.get("FOOLINGJAX_TEST_XLA_OPT", "0") != "default":
  _flag = "--xla_backend_optimization_level=" + os.environ.get("FOOLINGJAX_TEST_XLA_OPT", "0")
  if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _flag).strip()

import jax  # noqa: E402
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def key():
  return jax.random.key(0)


@pytest.fixture(scope="session")
def mnist_test():
  from foolingjax import data
  return data.load("mnist", "test")


@pytest.fixture(scope="session")
def lenet():
  """The bundled trained LeNet (seed 0): no training in the test run."""
  from foolingjax import zoo
  return zoo.load_classifier("lenet_mnist", seed=0, train_if_missing=False)


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
  # Tests never write into the user's cache; bundled weights are still found.
  if "FOOLINGJAX_TEST_CACHE" in os.environ:
    os.environ["FOOLINGJAX_CACHE"] = os.environ["FOOLINGJAX_TEST_CACHE"]
  else:
    os.environ["FOOLINGJAX_CACHE"] = str(tmp_path_factory.mktemp("cache"))
  yield


REPO = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def fool_smoke_run(tmp_path_factory):
  """One finished fool smoke run (4 generations), shared by the tests that only read it."""
  from experiments.nguyen2015 import fool
  from experiments.nguyen2015.configs import fool as fool_config
  workdir = tmp_path_factory.mktemp("fool_smoke")
  config = fool_config.get_config("smoke")
  config.generations = 4
  fool.run(config, workdir)
  return workdir
