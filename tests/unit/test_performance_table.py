"""The performance table is made from the benchmarks' result files: every row reads its file,
and a figure past its target is reported as not met."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from benchmarks import performance_table as pt


def _copy_results(tmp_path: Path) -> Path:
    out = tmp_path / "results"
    out.mkdir()
    for row in pt.ROWS:
        shutil.copy(pt.RESULTS / f"{row.source}.json", out / f"{row.source}.json")
    return out


def test_every_row_reads_its_results_file() -> None:
    lines = pt.table().splitlines()
    assert len(lines) == 2 + len(pt.ROWS) + 1
    for row, line in zip(pt.ROWS, lines[2:], strict=False):
        assert line.startswith(f"| {row.path} | `{row.source}.json`, 20"), line


def test_an_operator_past_its_target_is_not_met(tmp_path: Path) -> None:
    results = _copy_results(tmp_path)
    path = results / "operator.json"
    doc = json.loads(path.read_text())
    doc["largest"]["median"]["operator"]["react_s"] = 15.5
    path.write_text(json.dumps(doc))
    line = next(line for line in pt.table(results).splitlines() if "operator scale" in line)
    assert "all changed 15.5 s" in line
    assert line.endswith("| no ([why](operator.md)) |")


def test_the_page_keeps_what_is_outside_the_markers(tmp_path: Path) -> None:
    page = tmp_path / "README.md"
    page.write_text(f"intro\n\n{pt.BEGIN}\nold\n{pt.END}\n\nafter\n")
    pt.main(page)
    text = page.read_text()
    assert text.startswith("intro\n\n")
    assert text.endswith(f"{pt.END}\n\nafter\n")
    assert "old" not in text
    assert "| operator scale |" in text
