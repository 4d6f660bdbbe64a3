"""``index.html`` in every work directory: one page that tells the run's story.

The page is built from what the run wrote, so any experiment gets one:

* the status line (running or finished, progress from ``metrics.jsonl`` and
  the config's ``generations``, timings from the summaries);
* the summary numbers (``summary.json`` and each part's ``result.json``);
* the tables of every ``*.md`` at the top of the work directory (the paper's
  numbers stand in them where the experiment reproduces a paper table);
* every figure (the newest per-generation grids first, older ones folded);
* the config, and links to every raw file.

It is self-contained: inline CSS, images by relative link, no network and no
CDN, so it reads offline and travels with the directory. A small inline script
marks on ``<body>`` how many images loaded (``data-images-ok="n/m"``) and logs
a console error for each that did not; the tests read both in a headless
browser. Written atomically, at each checkpoint and at the end.
"""

from __future__ import annotations

import datetime
import html
import json
import pathlib
import re

SKIP_DIRS = ("checkpoints", "tensorboard", "__pycache__")
_GEN = re.compile(r"_gen(\d+)\.png$")

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#222}
header{background:#20324a;color:#fff;padding:14px 24px}
header h1{margin:0;font-size:20px} header p{margin:4px 0 0;color:#cfd8e3}
main{padding:8px 24px 40px;max-width:1300px}
h2{border-bottom:1px solid #ddd;padding-bottom:3px;margin-top:28px}
table{border-collapse:collapse;margin:8px 0 16px;font-size:13px}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f1f4f8} code,pre{font-family:ui-monospace,Menlo,Consolas,monospace}
pre{background:#f6f8fa;padding:8px;overflow:auto;max-height:420px;font-size:12px}
figure{display:inline-block;margin:6px 12px 12px 0;vertical-align:top}
figure img{max-width:620px;border:1px solid #ddd} figcaption{font-size:12px;color:#555}
.status{display:inline-block;padding:2px 8px;border-radius:3px;background:#e8f3e8}
.running{background:#fff3cd} .bar{background:#e5e7eb;height:10px;width:320px;
display:inline-block;vertical-align:middle;border-radius:5px;overflow:hidden}
.bar span{display:block;height:100%;background:#3b82f6}
"""

SCRIPT = """
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images), ok = 0;
  imgs.forEach(function (img) {
    if (img.complete && img.naturalWidth > 0) { ok += 1; }
    else { console.error('report: image did not load: ' + img.getAttribute('src')); }
  });
  document.body.setAttribute('data-images-ok', ok + '/' + imgs.length);
});
"""


def _esc(value) -> str:
  return html.escape(str(value), quote=True)


def _inline(text: str) -> str:
  """Markdown inline code and bold, on escaped text."""
  text = _esc(text)
  text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
  return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", text)


def markdown_to_html(text: str) -> str:
  """The markdown the experiments write: headings, pipe tables, lists, paragraphs."""
  out, table, para = [], [], []

  def flush():
    if table:
      rows = [r for r in table if not re.fullmatch(r"\|?[\s:|-]+\|?", r)]
      cells = [[c.strip() for c in r.strip().strip("|").split("|")] for r in rows]
      if cells:
        head = "".join(f"<th>{_inline(c)}</th>" for c in cells[0])
        body = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>"
                       for r in cells[1:])
        out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
      table.clear()
    if para:
      out.append("<p>" + " ".join(_inline(p) for p in para) + "</p>")
      para.clear()

  for line in text.splitlines():
    stripped = line.strip()
    if stripped.startswith("|"):
      if para:
        flush()
      table.append(stripped)
      continue
    if table:
      flush()
    if not stripped:
      flush()
    elif m := re.match(r"^(#{1,6})\s+(.*)$", stripped):
      flush()
      level = min(len(m[1]) + 2, 6)
      out.append(f"<h{level}>{_inline(m[2])}</h{level}>")
    elif stripped.startswith(("- ", "* ")):
      flush()
      out.append(f"<ul><li>{_inline(stripped[2:])}</li></ul>")
    else:
      para.append(stripped)
  flush()
  return "\n".join(out)


def _read_json(path: pathlib.Path):
  try:
    return json.loads(path.read_text())
  except (OSError, ValueError):
    return None


def _scalars_table(obj: dict) -> str:
  rows, nested = [], []
  for key, value in obj.items():
    if isinstance(value, (dict, list)):
      nested.append((key, value))
    else:
      shown = f"{value:.6g}" if isinstance(value, float) else value
      rows.append(f"<tr><th>{_esc(key)}</th><td>{_esc(shown)}</td></tr>")
  parts = [f"<table>{''.join(rows)}</table>"] if rows else []
  for key, value in nested:
    text = json.dumps(value, indent=1)
    parts.append(f"<details><summary>{_esc(key)} ({_esc(type(value).__name__)}, "
                 f"{len(value)} entries)</summary><pre>{_esc(text)}</pre></details>")
  return "\n".join(parts)


def _figures(workdir: pathlib.Path) -> tuple[list[pathlib.Path], list[pathlib.Path]]:
  """``(shown, folded)``: per-generation grids beyond the newest are folded."""
  pngs = [p for p in sorted(workdir.rglob("*.png"))
          if not any(part in SKIP_DIRS for part in p.relative_to(workdir).parts)
          and ".tmp" not in p.name]
  generations = sorted((p for p in pngs if _GEN.search(p.name)),
                       key=lambda p: int(_GEN.search(p.name)[1]))
  others = [p for p in pngs if not _GEN.search(p.name)]
  return others + generations[-1:], generations[:-1][::-1]


def _raw_files(workdir: pathlib.Path) -> list[tuple[str, int]]:
  """``(relative path, bytes)`` of the finished files under ``workdir``.

  A run (or a second process of a multi-host run, writing beside it) may be
  renaming a temporary file while the page is built: temporary names are left
  out, and a file that vanishes between the listing and its ``stat`` is skipped.
  """
  files = []
  for p in sorted(workdir.rglob("*")):
    if (p.name == "index.html" or ".tmp" in p.name or "__pycache__" in p.parts):
      continue
    try:
      if p.is_file():
        files.append((p.relative_to(workdir).as_posix(), p.stat().st_size))
    except FileNotFoundError:
      continue
  return files


def _figure(workdir: pathlib.Path, path: pathlib.Path) -> str:
  rel = path.relative_to(workdir).as_posix()
  return (f'<figure><a href="{_esc(rel)}"><img src="{_esc(rel)}" alt="{_esc(rel)}" '
          f'loading="eager"></a><figcaption>{_esc(rel)}</figcaption></figure>')


def _progress(workdir: pathlib.Path, config: dict) -> str:
  metrics = workdir / "metrics.jsonl"
  if not metrics.exists():
    return ""
  last = None
  for line in metrics.read_text().splitlines():
    try:
      last = json.loads(line)
    except ValueError:
      pass
  if not last or "generation" not in last:
    return ""
  total = config.get("generations")
  done = int(last["generation"])
  if isinstance(total, int) and total > 0:
    pct = 100 * min(done / total, 1)
    return (f'<p>Generation {done} of {total} <span class="bar"><span style="width:'
            f'{pct:.1f}%"></span></span> {pct:.0f} %</p>')
  return f"<p>Generation {done}.</p>"


def write_report(workdir, *, title: str | None = None, running: bool = False) -> pathlib.Path:
  """Writes ``workdir/index.html`` from the files the run wrote; returns its path."""
  workdir = pathlib.Path(workdir)
  config = _read_json(workdir / "config.json") or {}
  summary = _read_json(workdir / "summary.json")
  title = title or f"{workdir.name}: {config.get('preset', 'run')}"
  now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
  status = "running" if running else ("finished" if summary is not None else "in progress")
  sections = [f'<p><span class="status {"running" if status != "finished" else ""}">'
              f"{status}</span> · page written {now}</p>", _progress(workdir, config)]
  if summary is not None:
    sections.append("<h2>Summary</h2>" + _scalars_table(summary))
  parts = sorted(p for p in workdir.glob("*/result.json"))
  if parts:
    rows = []
    for p in parts:
      result = _read_json(p) or {}
      seconds = result.get("seconds")
      rows.append(f"<tr><td>{_esc(p.parent.name)}</td><td>"
                  f"{'' if seconds is None else f'{seconds:.0f} s'}</td></tr>")
    sections.append("<h2>Parts</h2><table><tr><th>part</th><th>time</th></tr>"
                    + "".join(rows) + "</table>")
    for p in parts:
      sections.append(f"<details><summary>{_esc(p.parent.name)}/result.json</summary>"
                      + _scalars_table(_read_json(p) or {}) + "</details>")
  for md in sorted(workdir.glob("*.md")):
    sections.append(f"<h2>{_esc(md.name)}</h2>" + markdown_to_html(md.read_text()))
  shown, folded = _figures(workdir)
  if shown or folded:
    sections.append("<h2>Figures</h2>" + "".join(_figure(workdir, p) for p in shown))
    if folded:
      sections.append(f"<details><summary>{len(folded)} earlier grids</summary>"
                      + "".join(_figure(workdir, p) for p in folded) + "</details>")
  sections.append("<h2>Config</h2><pre>" + _esc(json.dumps(config, indent=2, sort_keys=True))
                  + "</pre>")
  files = _raw_files(workdir)
  items = "".join(f'<li><a href="{_esc(rel)}">{_esc(rel)}</a> ({size:,} bytes)</li>'
                  for rel, size in files)
  sections.append(f"<h2>Raw files</h2><details><summary>{len(files)} files</summary>"
                  f"<ul>{items}</ul></details>")
  page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
          f"<title>{_esc(title)}</title><style>{CSS}</style><script>{SCRIPT}</script>"
          f"</head><body><header><h1>{_esc(title)}</h1><p>{_esc(workdir.resolve())}</p>"
          f"</header><main>{''.join(s for s in sections if s)}</main></body></html>")
  path = workdir / "index.html"
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text(page)
  tmp.replace(path)
  return path
