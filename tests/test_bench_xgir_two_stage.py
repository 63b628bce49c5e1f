"""The xgir-two-stage suite's quick run (a small extractor; about a minute): the report is
consistent with its own numbers and the defaults are the sweep's default column.

A smoke test of the pipeline, not of XGIR's merit: the claims checked are ones the code
could break (the gap closed is computed from the table it sits beside, the headline XGIR-IOX
row is the sweep's delta2 = 0.5 entry, the controls are run), whatever the accuracies are.
"""

from __future__ import annotations

import json

import pytest

from xgir.bench import get_suite


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("two-stage-quick") / "run"
    get_suite("xgir-two-stage").run(out, [0], quick=True)
    return out


def _row(report: str, name: str) -> list[str]:
    line = next(x for x in report.splitlines() if x.startswith(f"| {name} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_quick_report_matches_its_numbers(quick_run):
    res = json.loads((quick_run / "results.json").read_text())
    report = (quick_run / "report.md").read_text()
    assert res["quick"] is True and "a smoke test, not a result" in report
    table = res["table"]
    for name in ("ERM head", "DFR (group labels, reference)", "XGIR-IOX", "XGIR-CWOX", "XGIR, GT mask",
                 "XGIR, random mask"):
        assert name in table, name
    erm, dfr = table["ERM head"]["target"][0], table["DFR (group labels, reference)"]["target"][0]
    for name in ("XGIR-IOX", "XGIR, GT mask", "XGIR, random mask"):
        cells = _row(report, name)
        t = table[name]["target"][0]
        assert cells[2] == f"{t:.3f}", name  # target accuracy as stored
        assert float(cells[4]) == pytest.approx((t - erm) / (dfr - erm), abs=0.006), name  # gap closed
    # the headline XGIR-IOX row is the default delta2 (pooled quantile 0.5) of the sweep
    assert res["sweep"]["0"]["IOX"]["0.5"]["target"] == pytest.approx(table["XGIR-IOX"]["target"][0], abs=1e-9)
    assert (quick_run / "delta2.png").stat().st_size > 0 and (quick_run / "heatmaps.png").stat().st_size > 0
