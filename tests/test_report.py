"""The run page (index.html) in a real headless browser: it loads, every image renders."""

import pathlib
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


def test_files_renamed_while_the_page_is_built_are_skipped(tmp_path, monkeypatch):
  # A second process of a multi-host run writes beside the first (workdir/process_1):
  # its temporaries come and go while process 0 builds the page.
  (tmp_path / "config.json").write_text("{}")
  (tmp_path / "kept.json").write_text("{}")
  (tmp_path / "process_1").mkdir()
  (tmp_path / "process_1" / "elites.png.tmp.png").write_bytes(b"x")
  gone = tmp_path / "process_1" / "curves.json"
  gone.write_text("{}")
  stat = pathlib.Path.stat

  def vanishing_stat(self, *args, **kwargs):
    if self == gone:
      raise FileNotFoundError(self)
    return stat(self, *args, **kwargs)

  monkeypatch.setattr(pathlib.Path, "stat", vanishing_stat)
  page = report.write_report(tmp_path).read_text()
  assert "kept.json" in page and "config.json" in page
  assert ".tmp" not in page and "curves.json" not in page


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
