"""Pictures: a metrics log draws its curves beside metrics.jsonl when it closes, which a trainer does at the end
and on Ctrl-C (tests/test_training_hyformer.py checks the end of a run), and `python -m jaxmodels.plot` overlays
runs and refuses bad input with one error line."""

import json
import os
import signal
import struct
import threading
import time
import zlib
from pathlib import Path

import pytest

from jaxmodels import plot
from jaxmodels.curves import read_metrics, series
from jaxmodels_training.metrics import MetricsLog
from tests.test_training_hyformer import corpus, run  # noqa: F401 - corpus is a fixture

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) of a PNG after checking its signature and every chunk's CRC up to IEND."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    pos, kinds = 8, []
    while pos < len(data):
        (length,), kind = struct.unpack(">I", data[pos:pos + 4]), data[pos + 4:pos + 8]
        body, (crc,) = data[pos + 8:pos + 8 + length], struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert zlib.crc32(kind + body) == crc, f"{path}: bad CRC in chunk {kind!r}"
        kinds.append(kind)
        pos += 12 + length
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND" and b"IDAT" in kinds
    return struct.unpack(">II", data[16:24])


def write_run(path: Path, records: list[dict]) -> Path:
    path.mkdir(parents=True)
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def fake_run(path: Path, scale: float) -> Path:
    records = []
    for step in range(1, 21):
        records.append({"step": step, "split": "train", "loss": scale * 5 / step, "lr": 1e-3})
        if step % 5 == 0:
            records.append({"step": step, "split": "eval", "loss": scale * 6 / step, "accuracy": step / 20})
    return write_run(path, records)


def test_metrics_log_draws_its_curves_on_close(tmp_path):
    log = MetricsLog(tmp_path / "metrics.jsonl")
    for step in range(1, 6):
        log.write({"step": step, "split": "train", "loss": 3.0 / step})
    log.write({"step": 5, "split": "eval", "loss": 1.0})
    log.close()
    width, height = png_size(tmp_path / "metrics.png")
    assert (width, height) == (500, 360)  # one panel (loss) at 100 dpi
    log.close()  # a second close (the trainers' finally after an explicit close) does nothing


def test_metrics_log_without_records_draws_nothing(tmp_path):
    MetricsLog(tmp_path / "metrics.jsonl").close()
    assert not (tmp_path / "metrics.png").exists()


def test_trainer_writes_curves_on_ctrl_c(corpus, tmp_path):  # noqa: F811
    out = tmp_path / "int"
    metrics = out / "metrics.jsonl"

    def interrupt_after_three_lines():
        deadline = time.time() + 120
        while time.time() < deadline and not (metrics.exists() and len(metrics.read_text().splitlines()) >= 3):
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)  # the loop's handler finishes the step, saves and exits 130

    threading.Thread(target=interrupt_after_three_lines, daemon=True).start()
    with pytest.raises(SystemExit) as stop:
        run(corpus, out, "--steps", "100000", "--eval-every", "0", "--save-every", "0")
    assert stop.value.code == 130
    png_size(out / "metrics.png")


def test_series_reads_split_records_and_prefixed_keys():
    records = [{"step": 1, "split": "train", "loss": 2.0, "lr": 0.1}, {"step": 1, "split": "valid", "accuracy": 0.5},
               {"step": 2, "train_loss": 1.5, "eval_ppl": 9.0, "teacher_ppl": 4.0, "tokens_per_s": None},
               {"step": 3, "split": "train", "loss": float("nan"), "reward": True}]
    assert series(records) == {"loss": {"train": ([1, 2], [2.0, 1.5])}, "accuracy": {"valid": ([1], [0.5])},
                               "ppl": {"eval": ([2], [9.0])}}


def test_plot_overlays_two_runs(tmp_path, capsys):
    a, b = fake_run(tmp_path / "a", 1.0), fake_run(tmp_path / "b", 0.5)
    out = tmp_path / "both.png"
    plot.main([str(a), str(b), "--out", str(out), "--title", "a and b"])
    assert capsys.readouterr().out == f"wrote {out}\n"
    assert png_size(out) == (1000, 360)  # two panels: loss and accuracy


def test_plot_replaces_only_with_force(tmp_path, capsys):
    a, b = fake_run(tmp_path / "a", 1.0), fake_run(tmp_path / "b", 0.5)
    out = tmp_path / "one.png"
    plot.main([str(a), "--out", str(out)])
    before = out.read_bytes()
    with pytest.raises(SystemExit) as refused:
        plot.main([str(b), "--out", str(out)])
    assert refused.value.code == 2
    assert capsys.readouterr().err == f"error: --out {out} exists; pass --force to replace it\n"
    assert out.read_bytes() == before
    plot.main([str(b), "--out", str(out), "--force"])
    assert out.read_bytes() != before


def test_plot_reads_a_metrics_file_itself(tmp_path):
    write_run(tmp_path / "htft", [{"step": 100, "train_loss": 3.0, "eval_ppl": 20.0},
                                  {"step": 200, "train_loss": 2.5, "eval_ppl": 15.0}])
    out = tmp_path / "htft.png"
    plot.main([str(tmp_path / "htft" / "metrics.jsonl"), "--out", str(out)])
    png_size(out)


@pytest.mark.parametrize("make, message", [
    (lambda d: d.mkdir(), "{d} has no metrics.jsonl (not a training run directory)"),
    (lambda d: None, "{d}: no such run directory or metrics file"),
    (lambda d: write_run(d, [{"step": 1, "loss": 1.0}]).joinpath("metrics.jsonl").open("a").write('{"step": 2, "lo\n'),
     "{d}/metrics.jsonl line 2: not JSON"),
    (lambda d: write_run(d, [{"step": 1, "loss": 1.0}, [1, 2]]), "{d}/metrics.jsonl line 2: expected a JSON object"),
    (lambda d: write_run(d, [{"step": "3", "loss": 1.0}]), "{d}/metrics.jsonl line 1: expected an integer 'step'"),
    (lambda d: write_run(d, [{"step": 1, "lr": 0.1}]), "nothing to draw: no loss, accuracy, reward or ppl"),
])
def test_plot_bad_input_is_one_error_line(tmp_path, capsys, make, message):
    d = tmp_path / "run"
    make(d)
    out = tmp_path / "out.png"
    with pytest.raises(SystemExit) as refused:
        plot.main([str(d), "--out", str(out)])
    assert refused.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message.format(d=d)}") and err.count("\n") == 1, err
    assert not out.exists()


def test_plot_refuses_a_directory_as_out(tmp_path, capsys):
    a = fake_run(tmp_path / "a", 1.0)
    with pytest.raises(SystemExit) as refused:
        plot.main([str(a), "--out", str(tmp_path)])
    assert refused.value.code == 2
    assert capsys.readouterr().err == f"error: --out {tmp_path} is a directory; name the PNG file to write\n"


def test_read_metrics_names_file_and_line(tmp_path):
    d = write_run(tmp_path / "r", [{"step": 1, "loss": 1.0}])
    (d / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n\nnot json\n')
    with pytest.raises(plot.MetricsFileError, match=r"metrics.jsonl line 3: not JSON"):
        read_metrics(d / "metrics.jsonl")
