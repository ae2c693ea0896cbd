"""The full profile's code path, rehearsed: every run of the four full plans trains 2 steps on synthetic images
written into the real folder layouts (random weights), through the local executor and the run store, then the
notebooks gather and draw. The rows it emits must be exactly the rows `irlib plan --profile full` lists."""
import io
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
KEY = ["paper", "table", "method", "setting", "dataset", "metric"]


@pytest.mark.notebooks
def test_rehearsal_emits_exactly_the_planned_full_rows(tmp_path):
    data, out = tmp_path / "synth", tmp_path / "out"
    assert subprocess.run([sys.executable, "-m", "irlib.cli", "data", "synth", "--root", str(data)], cwd=REPO).returncode == 0
    r = subprocess.run([sys.executable, "-m", "irlib.cli", "reproduce", "--profile", "rehearse", "--executor", "local",
                        "--jobs", "2", "--data-root", str(data), "--out", str(out), "--only", "spn", "--only",
                        "textpromptir", "--only", "diffloss", "--only", "dinoir", "--progress-every", "60"],
                       capture_output=True, text=True, cwd=REPO, timeout=3600)
    status = pd.read_csv(out / "rehearse" / "status.csv")
    assert r.returncode == 0, status.to_string() + r.stdout[-3000:] + r.stderr[-3000:]
    plan_csv = subprocess.run([sys.executable, "-m", "irlib.cli", "plan", "--profile", "full", "--format", "csv"],
                              capture_output=True, text=True, cwd=REPO, check=True).stdout
    planned = pd.read_csv(io.StringIO(plan_csv), dtype=str, keep_default_na=False)
    rows = pd.read_csv(out / "rehearse" / "results.csv", dtype={k: str for k in KEY}, keep_default_na=False,
                       na_values={"value": [""]})
    assert set(map(tuple, rows[KEY].values)) == set(map(tuple, planned[KEY].values))
    assert len(rows) == len(planned)  # and no row twice
    missing = rows[rows.value.isna() & ~rows.notes.str.contains("collapsed")]
    assert missing.empty, missing[KEY + ["notes"]].head(20).to_string()
    assert (rows.profile == "rehearse").all() and (rows.weights == "random").all()
    # every paired row carries its gain over its baseline (e.g. DINO-IR Table 5's V1-V3 over V0)
    paired = rows[rows.baseline.fillna("") != ""]
    gain = pd.to_numeric(paired.gain, errors="coerce")
    assert len(paired) > 150 and gain.map(math.isfinite).all(), paired[~gain.map(math.isfinite)][KEY].head()
    t5 = rows[(rows.paper == "dinoir") & (rows.table == "Table 5") & rows.method.str.match(r"V[123] ")]
    assert len(t5) == 3 and (t5.baseline == "V0 (Restormer)").all()
    from irlib import plan

    figures = {(f.paper, f.figure) for p in plan.PAPERS for f in plan.build(p, "full").figures}
    import json

    drawn = {(m["paper"], m["figure"]) for f in (out / "rehearse").glob("*/figures/*.json") for m in [json.loads(f.read_text())]}
    assert figures <= drawn, sorted(figures - drawn)
    report = (out / "rehearse" / "report.md").read_text()
    assert "REHEARSE PROFILE" in report.upper()
