"""The run page (index.html) in a real headless browser: it loads, every image renders."""

import shutil
import subprocess

import pytest

from experiments import report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _browse(page):
  """``(dom, console lines)`` of a page after load, in headless chromium."""
  result = subprocess.run(
      [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
       "--v=0", "--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
      capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr[-2000:]
  return result.stdout, [l for l in result.stderr.splitlines() if "CONSOLE" in l]


@pytest.fixture(scope="module")
def run_dir(fool_smoke_run):
  return fool_smoke_run


def test_every_run_writes_a_self_contained_page(run_dir):
  page = (run_dir / "index.html").read_text()
  for part in ("Summary", "final_median", "curves.png", "elites.png", "elites_gen00000.png",
               "per_class.png",
               "metrics.jsonl", "Generation 4 of 4", "finished"):
    assert part in page, part
  # Nothing from the network: no absolute URLs at all.
  assert "http://" not in page and "https://" not in page and "//cdn" not in page


def test_markdown_tables_become_html_tables():
  text = "## Table 1\n\n| net | paper | ours |\n|---|---|---|\n| FC10 | 2 % | `46.1 %` |\n"
  out = report.markdown_to_html(text)
  assert "<h4>Table 1</h4>" in out
  assert "<th>paper</th>" in out and "<td><code>46.1 %</code></td>" in out


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (make test installs it "
                    "with apt when run as root)")
def test_the_page_loads_in_chromium_without_console_errors(run_dir, tmp_path):
  figures = len(list(run_dir.rglob("*.png")))   # elites at 0 and 4, final grid, curves, per class
  assert figures == 5
  dom, console = _browse(run_dir / "index.html")
  assert f'data-images-ok="{figures}/{figures}"' in dom   # every figure decoded, none missing
  assert not console, console
  # The check is real: a figure gone from the directory is reported.
  copy = tmp_path / "copy"
  shutil.copytree(run_dir, copy)
  (copy / "curves.png").unlink()
  dom, console = _browse(copy / "index.html")
  assert f'data-images-ok="{figures - 1}/{figures}"' in dom
  assert any("image did not load: curves.png" in line for line in console)
