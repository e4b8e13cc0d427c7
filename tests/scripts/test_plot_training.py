"""scripts/plot_training.py: resumed runs counted once, tokens and wall time, a PNG."""
import importlib.util
import json

import numpy as np
import pytest

from repo_paths import REPO_ROOT

_spec = importlib.util.spec_from_file_location("plot_training",
                                               REPO_ROOT / "scripts" / "plot_training.py")
plot_training = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(plot_training)

TOKENS_PER_BATCH = 32 * 320


def _line(step, loss, rate):
  return json.dumps({"step": step, "train/loss": loss, "train/steps_per_sec": rate,
                     "train/tokens_per_sec": rate * TOKENS_PER_BATCH,
                     "train/token_accuracy": 0.5})


def _write_run(folder, lines):
  folder.mkdir()
  (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")
  return folder


def test_a_resumed_run_counts_each_step_once(tmp_path):
  # Steps 1..30 logged every 10; killed after 30, resumed from the checkpoint at 20, so
  # steps 21 and 30 are logged again (with other rates); an eval line is not a train line.
  lines = [_line(1, 9.0, 0.5), _line(10, 8.0, 1.0), _line(20, 7.0, 1.0), _line(30, 6.5, 2.0),
           _line(21, 6.9, 0.25), _line(30, 6.4, 0.5), _line(40, 6.0, 0.5),
           json.dumps({"step": 40, "eval/accuracy": 0.3})]
  rows = plot_training.read_metrics(_write_run(tmp_path / "run", lines))
  assert [r["step"] for r in rows] == [1, 10, 20, 21, 30, 40]
  assert rows[-2]["train/loss"] == 6.4
  summary = plot_training.summarize(rows)
  assert summary["steps"] == 40 and summary["tokens_per_batch"] == TOKENS_PER_BATCH
  assert summary["tokens_seen"] == 40 * TOKENS_PER_BATCH
  # 1 step at 0.5/s, 9 at 1/s, 10 at 1/s, 1 at 0.25/s, 9 at 0.5/s, 10 at 0.5/s.
  assert summary["train_seconds"] == pytest.approx(2 + 9 + 10 + 4 + 18 + 20)
  assert summary["first_loss"] == 9.0
  assert summary["final_loss"] == pytest.approx(np.mean([7.0, 6.9, 6.4, 6.0, 8.0]))


def test_smooth_is_a_trailing_mean():
  values = np.array([4.0, 2.0, 6.0, 8.0, 0.0])
  expected = [np.mean(values[max(0, i - 2):i + 1]) for i in range(5)]
  np.testing.assert_allclose(plot_training.smooth(values, 3), expected)


def test_cli_writes_png_json_and_table(tmp_path, capsys):
  a = _write_run(tmp_path / "a", [_line(s, 10.0 / s, 1.0) for s in range(1, 60)])
  b = _write_run(tmp_path / "b", [_line(s, 3.0, 2.0) for s in (10, 20)])
  out, summary = tmp_path / "loss.png", tmp_path / "summary.json"
  assert plot_training.main(["--run", f"span corruption={a}", "--run", f"LM adaptation={b}",
                             f"--out={out}", f"--json={summary}"]) == 0
  assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  written = json.loads(summary.read_text())
  assert list(written) == ["span corruption", "LM adaptation"]
  assert written["LM adaptation"]["steps"] == 20
  table = capsys.readouterr().out
  assert "| span corruption | 59 |" in table and "| LM adaptation | 20 |" in table


def test_cli_errors(tmp_path, capsys):
  assert plot_training.main(["--run", f"x={tmp_path}", f"--out={tmp_path / 'p.png'}"]) == 1
  assert "metrics.jsonl does not exist" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    plot_training.main(["--run", "no-equals-sign", f"--out={tmp_path / 'p.png'}"])
  assert "expected NAME=MODEL_DIR, got 'no-equals-sign'" in capsys.readouterr().err


def test_a_line_torn_by_a_kill_is_skipped_and_the_resumed_logger_starts_a_fresh_line(tmp_path):
  from prompt_tuning.train import metrics as metrics_lib
  run = tmp_path / "run"
  run.mkdir()
  (run / "metrics.jsonl").write_text(_line(10, 8.0, 1.0) + "\n" + _line(20, 7.0, 1.0)[:25])
  logger = metrics_lib.MetricsLogger(str(run), total_steps=30, start_step=10, is_writer=True)
  logger.write(20, {"train/loss": 6.0, "train/steps_per_sec": 1.0,
                    "train/tokens_per_sec": TOKENS_PER_BATCH})
  logger.close()
  assert [r["step"] for r in metrics_lib.read_metrics(str(run))] == [10, 20]
  rows = plot_training.read_metrics(run)
  assert [(r["step"], r["train/loss"]) for r in rows] == [(10, 8.0), (20, 6.0)]
