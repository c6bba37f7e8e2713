import json
import math

import pytest

from jaxmodels_benchmarks.suites import htft_summary


def test_summary_table_plot_and_errors(tmp_path, capsys):
    path = tmp_path / "m.jsonl"
    rows = [{"step": 8, "train_ppl": 40.0, "eval_ppl": 30.0, "teacher_ppl": 10.0, "unigram_ppl": 40.0},
            {"step": 16, "train_ppl": 30.0, "eval_ppl": 20.0, "teacher_ppl": 10.0, "unigram_ppl": 40.0},
            {"step": 24, "train_ppl": 25.0, "eval_ppl": 22.0, "teacher_ppl": 10.0, "unigram_ppl": 40.0}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    s = htft_summary.summarise(htft_summary.read_metrics(path))
    assert (s["best_step"], s["best_eval_ppl"], s["final_eval_ppl"]) == (16, 20.0, 22.0)
    assert s["best_ratio"] == 2.0 and s["final_ratio"] == 2.2
    assert s["gap_closed"] == pytest.approx(math.log(2) / math.log(4))
    png = tmp_path / "c.png"
    htft_summary.main([str(path), "--plot", str(png)])
    out = capsys.readouterr().out
    assert "| best_eval_ppl |" in out.splitlines()[0].replace("| run | evaluations | final_step ", "| ")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 500
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    with pytest.raises(SystemExit, match="bad.jsonl:1 is not JSON"):
        htft_summary.main([str(tmp_path / "bad.jsonl")])
    (tmp_path / "empty.jsonl").write_text(json.dumps({"step": 1}) + "\n")
    with pytest.raises(SystemExit, match="holds no evaluation records"):
        htft_summary.main([str(tmp_path / "empty.jsonl")])
