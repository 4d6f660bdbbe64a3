"""Every notebook runs end to end (at toy sizes) and is committed without outputs."""


import nbformat
import pytest

from tests.conftest import REPO

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
  assert len(NOTEBOOKS) >= 4


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stripped(path):
  notebook = nbformat.read(path, as_version=4)
  for cell in notebook.cells:
    if cell.cell_type == "code":
      assert not cell.outputs and cell.execution_count is None, f"{path.name} has outputs"


# Every notebook runs under `pytest -m slow`; the default suite (CI, 2 cores,
# ~15 minutes) runs these two, whose functions the others' share: each
# notebook costs ~30 s of kernel start and compilation.
IN_DEFAULT_SUITE = {"01_fooling_mnist_in_five_minutes", "05_intriguing_properties"}


@pytest.mark.parametrize("path", [
    p if p.stem in IN_DEFAULT_SUITE else pytest.param(p, marks=pytest.mark.slow)
    for p in NOTEBOOKS], ids=lambda p: p.stem)
def test_notebook_executes(path, monkeypatch):
  nbclient = pytest.importorskip("nbclient")
  monkeypatch.setenv("FOOLINGJAX_NOTEBOOK_SMALL", "1")
  monkeypatch.setenv("MPLBACKEND", "Agg")
  notebook = nbformat.read(path, as_version=4)
  client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                   resources={"metadata": {"path": str(REPO)}})
  client.execute()
  errors = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs
            if o.output_type == "error"]
  assert not errors
