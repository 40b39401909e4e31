"""benchmarks/quickstart_time.py: reading the quickstart's table, and running each side from its own src."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.quickstart_time import parse_metrics, run_quickstart

TABLE = """PointDC quickstart (teacher-free): Hungarian-matched results on the synthetic validation rooms (%)
            mIoU   19.35
        accuracy   77.78
         bathtub    0.00
"""

FAKE_QUICKSTART = """
def main(argv):
    print("warming up")
    print("            mIoU   12.50")
    print("        accuracy   50.00")
"""


def test_parse_metrics_reads_the_last_table_as_fractions() -> None:
    earlier = TABLE.replace("19.35", "3.00").replace("77.78", "4.00")
    miou, acc = parse_metrics(earlier + "\nlog lines\n" + TABLE)
    assert (miou, acc) == pytest.approx((0.1935, 0.7778))
    with pytest.raises(ValueError, match="no mIoU"):
        parse_metrics("Epoch 3: loss 0.5\n")


def test_each_side_runs_from_its_own_src(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "unsup3d").mkdir(parents=True)
    (src / "unsup3d" / "__init__.py").write_text("")
    (src / "unsup3d" / "quickstart.py").write_text(FAKE_QUICKSTART)
    work = tmp_path / "work"
    work.mkdir()
    seconds, output = run_quickstart(src, work, tmp_path / "fake.log", [])
    assert seconds > 0 and parse_metrics(output) == pytest.approx((0.125, 0.5))
    assert (tmp_path / "fake.log").read_text() == output

    # a src without the package: the interpreter finds the installed one, and the run is refused
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RuntimeError, match="imported unsup3d from"):
        run_quickstart(empty, work, tmp_path / "empty.log", [])
