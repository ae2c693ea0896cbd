import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from irlib.reproduce import sync_notebooks
from irlib.results import paired_bootstrap, reference

REPO = Path(__file__).resolve().parents[1]


def test_reference_tables_are_packaged():
    ref = reference()
    assert len(ref) == 269 + 282 + 75 + 370
    row = ref[(ref.paper == "spn") & (ref.table == "Table 1") & (ref.method == "EDSR-light+SPN") & (ref.setting == "x4")
              & (ref.dataset == "Set14") & (ref.metric == "PSNR")]
    assert row.value.tolist() == ["28.63"]


def test_paired_bootstrap_matches_theory():
    rng = np.random.default_rng(0)
    a = rng.normal(30, 1, 400)
    b = a + 0.05 + rng.normal(0, 0.1, 400)
    d, lo, hi = paired_bootstrap(a, b)
    se = np.std(b - a) / np.sqrt(400)
    assert d == pytest.approx(np.mean(b - a))
    assert lo == pytest.approx(d - 1.96 * se, abs=0.003) and hi == pytest.approx(d + 1.96 * se, abs=0.003)
    with pytest.raises(ValueError):
        paired_bootstrap([1, 2], [1])


def test_notebooks_in_sync_and_have_parameters():
    assert sync_notebooks(check=True) == []
    import nbformat

    for nb in (REPO / "notebooks").glob("*.ipynb"):
        cells = nbformat.read(nb, as_version=4).cells
        params = [c for c in cells if "parameters" in c.metadata.get("tags", [])]
        assert len(params) == 1, nb.name
        for name in ("profile", "device", "data_root", "seed", "out_dir"):
            assert f"{name} =" in params[0].source, (nb.name, name)


@pytest.mark.notebooks
def test_smoke_reproduction_of_all_notebooks(tmp_path):
    r = subprocess.run([sys.executable, "-m", "irlib.cli", "reproduce", "--profile", "smoke", "--jobs", "2",
                        "--out", str(tmp_path)], capture_output=True, text=True, timeout=3000, cwd=REPO)
    status = pd.read_csv(tmp_path / "smoke" / "status.csv")
    assert r.returncode == 0, status.to_string() + r.stderr[-3000:]
    assert set(status.notebook) >= {"spn", "textpromptir", "diffloss", "dinoir", "benchmarks"}
    assert (status.status == "ok").all()
    rows = pd.read_parquet(tmp_path / "smoke" / "results.parquet")
    assert set(rows.paper) >= {"spn", "textpromptir", "diffloss", "dinoir"}
    assert (rows.profile == "smoke").all() and (rows.weights == "random").all()
    papers = rows[rows.paper.isin(["spn", "textpromptir", "diffloss", "dinoir"])]
    from irlib import plan

    planned = pd.concat([plan.build(p, "smoke").frame() for p in plan.PAPERS])
    key = ["paper", "table", "method", "setting", "dataset", "metric"]
    assert set(map(tuple, papers[key].values)) == set(map(tuple, planned[key].values))  # exactly the smoke plan
    assert papers.value.notna().mean() > 0.95, papers[papers.value.isna()][key + ["notes"]].head(20).to_string()
    report = (tmp_path / "smoke" / "report.md").read_text()
    assert "SMOKE PROFILE" in report and "NOT comparable" in report and " / " in report
    assert (tmp_path / "smoke" / "report.html").is_file()
    assert (tmp_path / "smoke" / "spn" / "spn.ipynb").is_file()  # executed notebook kept
    figs = list((tmp_path / "smoke").glob("*/figures/*.png"))
    assert len(figs) >= sum(len(plan.build(p, "smoke").figures) for p in plan.PAPERS)


def test_failing_notebook_is_recorded_and_others_continue(tmp_path, monkeypatch):
    nbdir = tmp_path / "nbs"
    nbdir.mkdir()
    import nbformat

    def nb(code):
        n = nbformat.v4.new_notebook()
        p = nbformat.v4.new_code_cell('profile = "smoke"\ndevice = "cpu"\ndata_root = "d"\nseed = 0\nout_dir = "o"')
        p.metadata["tags"] = ["parameters"]
        n.cells = [p, nbformat.v4.new_code_cell(code)]
        n.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        return n

    nbformat.write(nb("raise RuntimeError('boom')"), nbdir / "a_fail.ipynb")
    nbformat.write(nb("import os, pandas as pd\nfrom irlib.engine import ROW_COLUMNS\nos.makedirs(out_dir, exist_ok=True)\n"
                      "pd.DataFrame([dict(paper='spn', table='Table 8', method='EDSR-light', setting='lambda=0', "
                      "dataset='Set14', metric='PSNR', value=1.0)], columns=ROW_COLUMNS).to_csv(out_dir + '/results.csv', index=False)"),
                   nbdir / "b_ok.ipynb")
    monkeypatch.setenv("IRLIB_NOTEBOOKS", str(nbdir))
    monkeypatch.chdir(tmp_path)  # a relative --out must still land here, not under the notebooks' cwd
    from irlib.reproduce import reproduce

    st = reproduce("smoke", "out", jobs=2, echo=lambda *a: None)
    assert dict(zip(st.notebook, st.status)) == {"a_fail": "failed", "b_ok": "ok"}
    assert "boom" in st.error[0]
    rows = pd.read_csv(tmp_path / "out" / "smoke" / "results.csv")
    assert len(rows) == 1
