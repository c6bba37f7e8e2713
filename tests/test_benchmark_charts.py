"""Benchmark charts: every suite's chart draws from its committed results, write_results puts it beside the table,
and `python -m benchmarks redraw` redraws from the JSON alone."""

import json
import shutil
from pathlib import Path

import pytest

import jaxmodels_benchmarks.__main__ as cli
from jaxmodels_benchmarks import charts, harness
from tests.test_plots import png_size

pytest.importorskip("matplotlib")
RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
CHARTED = [p.stem for p in sorted(RESULTS.glob("*.json"))
           if hasattr(cli._suite(cli.suite_of(p.stem, cli.available()) or "svf"), "chart")]


@pytest.fixture
def results(tmp_path):
    harness.set_results_dir(tmp_path)
    yield tmp_path
    harness.set_results_dir(None)


def test_suites_with_charts_are_found():
    assert {"convert", "decode", "decode-model", "finetune", "htfr", "hyformer", "kernels", "qwen-vl", "sft-demo",
            "sharded-load", "vvalt"} <= set(CHARTED)
    assert cli.suite_of("qwen-vl-quick", cli.available()) == "qwen-vl"
    assert cli.suite_of("htft-teacher", cli.available()) == "htft"
    assert cli.suite_of("nothing-here", cli.available()) is None


@pytest.mark.parametrize("name", CHARTED)
def test_redraw_draws_the_committed_results(results, name, capsys):
    shutil.copy(RESULTS / f"{name}.json", results)
    cli.main(["redraw", name])
    assert capsys.readouterr().out == f"wrote {results / name}.png\n"
    width, height = png_size(results / f"{name}.png")
    assert width >= 400 and height >= 200
    assert (results / f"{name}.png").stat().st_size < 200_000  # small enough to commit
    assert not harness.pyplot().get_fignums()


def test_redraw_refuses_what_it_cannot_draw(results):
    with pytest.raises(SystemExit, match=r"missing.json does not exist"):
        cli.main(["redraw", "missing"])
    (results / "mystery.json").write_text(json.dumps({"rows": [], "results": {}}))
    with pytest.raises(SystemExit, match=r"mystery.json was written by no suite, which draws no chart"):
        cli.main(["redraw", "mystery"])


def test_write_results_puts_the_chart_beside_the_table(results):
    def chart(rows, extra):
        return charts.ratio_figure([r["case"] for r in rows], [r["ratio"] for r in rows], title=extra["title"],
                                   xlabel="theirs / ours", limits={"target 2x": 2.0})

    harness.write_results("demo", {"title": "two cases"}, [{"case": "a", "ratio": 1.5}, {"case": "b", "ratio": 0.5}],
                          chart=chart)
    assert "![demo](demo.png)" in (results / "demo.md").read_text()
    png_size(results / "demo.png")
    assert sorted(p.name for p in results.iterdir()) == ["demo.json", "demo.md", "demo.png"]


def test_grouped_bars_centre_each_group_on_its_label():
    fig, (ax,) = charts.figure()
    charts.grouped_bars(ax, ["x", "y"], {"a": [1, 2], "b": [3, 4], "c": [5, 6]}, width=0.9)
    centres = sorted(round(p.get_x() + p.get_width() / 2, 6) for p in ax.patches)
    assert centres == [-0.3, 0.0, 0.3, 0.7, 1.0, 1.3]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["x", "y"]
    harness.pyplot().close(fig)
