"""benchmarks.scale: its table and the per-site cost growth, from a recorded result."""

from __future__ import annotations

import json

from benchmarks import scale
from tests.conftest import REPO


def test_the_recorded_run_renders_and_its_growth_is_per_added_site():
    result = json.loads((REPO / "benchmarks" / "results" / "scale.json").read_text())
    work = result["work"]
    assert [w["sites"] for w in work] == [10, 100, 1000]
    assert all(w["dataset_same_at_w1_w2"] and w["w2_weights_repeat"] for w in work)
    assert all(w["verdict"] == "VERIFIED" for w in work)
    assert all(r["errors"] == 0 for r in result["registration"])
    g = scale.growth(work)
    assert g is not None
    want = (work[-1]["synthesis_s_w1"] - work[0]["synthesis_s_w1"]) / 990
    assert abs(g["synthesis_s_w1"] - want) < 1e-12
    md = scale.markdown(result)
    assert "| 1000 | postgres | 2 |" in md and "Cost growth per added site" in md
    assert scale.growth(work[:1]) is None
