import json

import ml_collections
import pytest

from experiments import core


def _config(seed):
  return ml_collections.ConfigDict({"seed": seed, "steps": 3})


def test_prepare_workdir_resumes_the_same_config_and_refuses_another(tmp_path):
  workdir, resuming = core.prepare_workdir(tmp_path / "run", _config(0))
  assert not resuming
  (workdir / "results.json").write_text("{}")
  assert core.prepare_workdir(workdir, _config(0)) == (workdir, True)
  with pytest.raises(core.WorkdirConflictError, match="seed"):
    core.prepare_workdir(workdir, _config(1))
  assert json.loads((workdir / "config.json").read_text())["seed"] == 0


def test_prepare_workdir_takes_over_a_directory_with_no_results(tmp_path):
  # A run that stopped on bad input left only its config.json behind.
  workdir, _ = core.prepare_workdir(tmp_path / "run", _config(0))
  assert core.prepare_workdir(workdir, _config(1)) == (workdir, False)
  assert json.loads((workdir / "config.json").read_text())["seed"] == 1


def test_prepare_workdir_ignores_the_listed_keys(tmp_path):
  workdir, _ = core.prepare_workdir(tmp_path / "run", _config(0), ignore=("steps",))
  (workdir / "ckpt").mkdir()
  longer = _config(0)
  longer.steps = 10
  assert core.prepare_workdir(workdir, longer, ignore=("steps",)) == (workdir, True)


def test_markdown_tables_round_trip():
  header = ["net", "error", "distortion"]
  rows = [["FC10(1e-4)", core.pct(0.0777), core.number(0.0684)],
          ["AE400-10", core.pct(None), core.number(float("nan"))]]
  text = ("# Results\n\n### Table 1\n\n" + core.markdown_table(header, rows)
          + "\n\n### Table 2\n\n" + core.markdown_table(["a", "b"], [["x", "1"]]) + "\n")
  tables = core.parse_markdown_tables(text)
  assert tables["Table 1"]["FC10(1e-4)"] == {"net": "FC10(1e-4)", "error": "7.8%",
                                             "distortion": "0.0684"}
  assert tables["Table 1"]["AE400-10"]["error"] == "—"
  assert tables["Table 2"] == {"x": {"a": "x", "b": "1"}}
  with pytest.raises(ValueError, match="3 cells"):
    core.markdown_table(header, [["only", "two"]])


@pytest.mark.parametrize("value, pct, confidence", [
    (0.5, "50.0%", "50.00%"),
    (0.99999996, "100.0%", "99.9999%"),     # confidence truncates, never rounds up
    (0.0002, "0.0%", "2.0e-02%"),
    (None, "—", "—"),
    (float("nan"), "—", "—"),
])
def test_one_convention_for_numbers(value, pct, confidence):
  assert core.pct(value) == pct
  assert core.confidence(value) == confidence


def test_read_jsonl_drops_a_cut_last_line_and_names_a_bad_middle_one(tmp_path):
  path = tmp_path / "metrics.jsonl"
  core.write_jsonl(path, [{"step": 0}, {"step": 1}])
  with open(path, "a") as f:
    f.write('{"step": 2, "lo')
  assert core.read_jsonl(path) == [{"step": 0}, {"step": 1}]
  path.write_text('{"step": 0}\nnot json\n{"step": 2}\n')
  with pytest.raises(ValueError, match=r"metrics.jsonl, line 2"):
    core.read_jsonl(path)
  assert core.read_jsonl(tmp_path / "missing.jsonl") == []


def test_parts_are_parsed_in_order_and_skipped_when_done(tmp_path):
  assert core.parse_parts(" b,a ", ("a", "b", "c")) == ["a", "b"]
  with pytest.raises(ValueError, match=r"unknown \['z'\]"):
    core.parse_parts("a,z", ("a", "b"))
  calls = []
  runners = {"a": lambda: calls.append("a") or {"x": 1.5},
             "b": lambda: calls.append("b") or {"y": float("nan")}}
  first = core.run_parts(tmp_path, ["a", "b"], runners, log=lambda _: None)
  again = core.run_parts(tmp_path, ["a", "b"], runners, log=lambda _: None)
  assert calls == ["a", "b"] and first == again
  assert first["b"]["y"] is None           # NaN is written as null: the file stays JSON
  assert json.loads((tmp_path / "a" / "result.json").read_text())["x"] == 1.5


def test_named_rng_streams_are_stable_and_distinct():
  import jax
  assert jax.random.key_data(core.rng(0, "a")).tolist() == \
      jax.random.key_data(core.rng(0, "a")).tolist()
  assert jax.random.key_data(core.rng(0, "a")).tolist() != \
      jax.random.key_data(core.rng(0, "b")).tolist()
  # An int stream is fold_in(key(seed), int): the experiments' old keys.
  assert jax.random.key_data(core.rng(3, 1)).tolist() == \
      jax.random.key_data(jax.random.fold_in(jax.random.key(3), 1)).tolist()


def test_check_lists_every_failure_at_once():
  with pytest.raises(ValueError, match="Bad toy config: a is bad; c is bad"):
    core.check([(False, "a is bad"), (True, "b is fine"), (False, "c is bad")],
               what="toy")


def test_no_workdir_is_one_clear_error():
  with pytest.raises(ValueError, match="--workdir"):
    core.prepare_workdir(None, _config(0))


class _Terminal:
  def __init__(self):
    self.text = ""

  def isatty(self):
    return True

  def write(self, s):
    self.text += s

  def flush(self):
    pass


def test_progress_bar_draws_only_on_a_terminal():
  import io
  term = _Terminal()
  bar = core.Progress(10, "[attack] net", unit="images", stream=term)
  bar._time = iter([1.0, 2.0]).__next__           # 1 s elapsed at the first update
  bar.t0 = 0.0
  bar.update(4)
  assert term.text.startswith("\r[attack] net [" + "#" * 11)
  assert "4/10  40 %  4.00 images/s  ~2s left" in term.text
  bar.close()
  assert term.text.endswith("\r\x1b[K")
  quiet = io.StringIO()                               # not a terminal: nothing drawn
  bar = core.Progress(10, "x", stream=quiet)
  bar.update(5)
  bar.close()
  assert quiet.getvalue() == ""
  assert core.duration(3725) == "1h02m" and core.duration(65) == "1m05s"


def test_a_key_added_later_at_its_old_behaviour_changes_no_fingerprint_or_resume(tmp_path):
  old = ml_collections.ConfigDict({"seed": 0, "direct": {"variant": "foolingjax"}})
  new = ml_collections.ConfigDict({"seed": 0, "direct": {"variant": "foolingjax",
                                                         "kernel": "reference"}})
  assert core.fingerprint("x", old) == core.fingerprint("x", new)
  fast = ml_collections.ConfigDict({"seed": 0, "direct": {"variant": "foolingjax",
                                                          "kernel": "fast"}})
  assert core.fingerprint("x", old) != core.fingerprint("x", fast)
  workdir, _ = core.prepare_workdir(tmp_path / "run", old)    # written before the key
  (workdir / "results.json").write_text("{}")
  assert core.prepare_workdir(workdir, new) == (workdir, True)
  with pytest.raises(core.WorkdirConflictError, match="direct"):
    core.prepare_workdir(workdir, fast)
