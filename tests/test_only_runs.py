"""`irlib reproduce --only-runs FILE` (a budget selection) and `--gpu NAME` (gradient accumulation that fits it):
only the listed runs and their dependencies train, the rows they compute are kept, the others say they were not
run in this selection; wrong files fail before anything runs; the accumulation factor is recorded and used."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from irlib import plan
from irlib.engine import Builder, EvalSpec, Profile, RunStore
from irlib.engine.cost import row_run_keys
from irlib.engine.selection import NOT_SELECTED, SelectionError, read_selection, restrict
from irlib.schedules import Schedule

REPO = Path(__file__).resolve().parents[1]

SESSION = ("from irlib.notebook import session\n"
           "S = session('spn', profile=profile, device=device, data_root=data_root, seed=seed, out_dir=out_dir, "
           "runs_dir=runs_dir, only=only, skip_data=skip_data, only_runs=only_runs)\n"
           "S.overview()\nS.run()\nS.show_figures()\n")


def _nb(path: Path, code: str) -> None:
    from test_reproduce import _nb as make

    make(path, code, 'runs_dir = ""\nonly = ""\nskip_data = ""\nonly_runs = ""\n')


@pytest.fixture
def nbdir(tmp_path, monkeypatch):
    d = tmp_path / "nbs"
    d.mkdir()
    _nb(d / "spn.ipynb", SESSION)
    _nb(d / "dinoir.ipynb", "raise RuntimeError('dinoir has no listed run: it must not run')")
    _nb(d / "benchmarks.ipynb", "raise RuntimeError('not a paper: it must not run under --only-runs')")
    monkeypatch.setenv("IRLIB_NOTEBOOKS", str(d))
    return d


def _keys(paper: str, table: str, *labels: str) -> dict[str, str]:
    runs = {r.label: r.key() for r in plan.build(paper, "smoke").select([table]).runs()}
    return {lb: runs[lb] for lb in labels}


def test_reading_a_selection_file(tmp_path):
    f = tmp_path / "sel.txt"
    f.write_text("# chosen by irlib plan --budget\n\nabc  # EDSR, 3.1 GPU-h\n  def\nabc\n")
    assert read_selection(f) == ["abc", "def"]
    with pytest.raises(SelectionError, match="no such file"):
        read_selection(tmp_path / "nope.txt")
    f.write_text("# only a comment\n\n   \n")
    with pytest.raises(SelectionError, match="lists no run key"):
        read_selection(f)
    f.write_text("abc def\n")
    with pytest.raises(SelectionError, match="line 1: expected one run key"):
        read_selection(f)


def test_two_listed_runs_train_alone_and_the_other_rows_say_they_were_not_run(nbdir, tmp_path):
    keys = _keys("spn", "Table 8", "EDSR-light x4", "EDSR-light x4+SPN (lambda=1e-2)")
    sel = tmp_path / "sel.txt"
    sel.write_text("# two runs\n\n" + "".join(f"{k}  # {lb}\n" for lb, k in keys.items()))
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "irlib.cli", "reproduce", "--only-runs", str(sel), "--out", str(out)],
                       capture_output=True, text=True, cwd=REPO, timeout=900,
                       env={**os.environ, "IRLIB_NOTEBOOKS": str(nbdir), "PYTHONPATH": str(REPO)})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "dinoir: none of its runs is listed" in r.stdout
    status = pd.read_csv(out / "smoke" / "status.csv")
    assert status.notebook.tolist() == ["spn"] and status.status.tolist() == ["ok"]   # no dinoir, no benchmarks
    runs = out / "smoke" / "runs"
    assert sorted(p.name for p in runs.iterdir() if (p / "job.json").is_file()) == sorted(keys.values())
    for k in keys.values():
        assert json.loads((runs / k / "done.json").read_text())["accum"] == 1      # no --gpu: no accumulation
        assert json.loads((runs / k / "job.json").read_text())["accum"] == 1
    rows = pd.read_csv(out / "smoke" / "results.csv", keep_default_na=False, na_values=[""])
    spn = plan.build("spn", "smoke")
    assert len(rows) == len(spn.rows)                                  # every row of the paper, none lost
    t8 = rows[rows.table == "Table 8"].set_index("setting")
    assert t8.loc[["lambda=0", "lambda=1e-2"], "value"].notna().all()
    assert t8.loc["lambda=1e-2", "gain"] == t8.loc["lambda=1e-2", "gain"]   # paired against the listed baseline
    measured = rows[rows.value.notna()]
    assert set(" ".join(measured.runs.fillna("")).split()) <= set(keys.values())
    left = rows[rows.value.isna()]
    assert len(left) > 100 and (left.notes.str.startswith(NOT_SELECTED)).all(), left.notes.unique()[:5]
    log = (out / "smoke" / "spn" / "spn.ipynb").read_text()
    assert "not drawn: not run in this selection" in log and "failed" not in log.lower()
    report = (out / "smoke" / "report.md").read_text()
    assert "not run in this selection" in report


def test_unknown_keys_fail_before_anything_runs_naming_each(nbdir, tmp_path, capsys):
    from irlib.cli import main

    mine = _keys("spn", "Table 8", "EDSR-light x4")["EDSR-light x4"]
    full = next(r for r in plan.build("spn", "full").runs() if r.label == "EDSR-light x4")
    sel = tmp_path / "sel.txt"
    sel.write_text(f"{mine}\n{full.key()}  # from the full profile's budget\n0123456789abcdef\n")
    out = tmp_path / "out"
    code = main(["reproduce", "--only", "spn/Table 8", "--only-runs", str(sel), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "2 of 3 keys are not runs of the smoke profile's selected plans [spn (Table 8)]" in err
    assert f"{full.key()} (a full-profile spn run 'EDSR-light x4')" in err
    assert "0123456789abcdef (no run of any profile)" in err and mine not in err
    outside = _keys("spn", "Table 1", "EDSR-light x2")["EDSR-light x2"]     # a smoke run outside --only
    sel.write_text(f"{mine}\n{outside}\n")
    assert main(["reproduce", "--only", "spn/Table 8", "--only-runs", str(sel), "--out", str(out)]) == 2
    assert f"{outside} (outside --only: a smoke-profile spn run 'EDSR-light x2')" in capsys.readouterr().err
    for text, why in [(None, "no such file"), ("# nothing\n\n", "lists no run key")]:
        f = tmp_path / f"{why[:2]}.txt"
        if text is not None:
            f.write_text(text)
        assert main(["reproduce", "--only-runs", str(f), "--out", str(out)]) == 2
        assert why in capsys.readouterr().err
    assert not (out / "smoke" / "runs").exists() and not (out / "smoke" / "spn").exists()   # nothing ran


def test_a_dependency_of_a_listed_run_is_brought_in(nbdir, tmp_path):
    from irlib.reproduce import reproduce

    t6 = plan.build("spn", "smoke").select(["Table 6"])
    dependent = next(r for r in t6.runs() if r.deps())
    (dep,) = dependent.deps()
    kept, left = restrict(t6, [dependent.key()])
    assert [r.key() for r in kept.runs()] == [dep.key(), dependent.key()]   # the dependency first
    by_key = {row.key: row for row in t6.rows}
    assert kept.rows and all(row_run_keys(row, by_key) <= {dep.key(), dependent.key()} for row in kept.rows)
    assert any(dependent.key() in row_run_keys(row, by_key) for row in kept.rows)   # its own rows are computed
    assert len(kept.rows) + len(left.rows) == len(t6.rows) and left.rows
    sel = tmp_path / "sel.txt"
    sel.write_text(dependent.key() + "\n")
    lines: list[str] = []
    reproduce(profile="smoke", out=tmp_path / "out", only=["spn/Table 6"], only_runs=sel, preflight_only=True,
              echo=lines.append)
    assert any(f"1 more they depend on ({dep.label})" in ln for ln in lines), lines
    written = read_selection(tmp_path / "out" / "smoke" / "only-runs.txt")
    assert written == [dependent.key(), dep.key()]
    waves = plan.submit_plans([kept], RunStore(tmp_path / "runs"), plan.Context("data", tmp_path / "runs"))
    assert waves == [[dep.key()], [dependent.key()]]


def _tiny_plan() -> plan.Plan:
    P = Profile("smoke", "tiny", "random", smoke_schedule=Schedule(3, 4, 32, 1e-3, grad_clip=1.0), scale="tiny")
    B = Builder("spn", P)
    run = B.run("EDSR-light", net_kw={"scale": 4}, train=[("div2k:train-x4", "srx4")], schedule=P.smoke_schedule,
                label="EDSR-light x4")
    B.measure("Table 8", "EDSR-light", "lambda=0", "Set14", (run,),
              EvalSpec(B.testset("sr_benchmark:Set14-x4", "srx4"), channel="y", crop=4), ("PSNR",))
    return B.plan


def test_a_gpu_too_small_for_the_batch_records_accumulation_and_the_trainer_splits_the_batch(tmp_path, monkeypatch):
    import irlib.train
    from irlib.engine import cost
    from irlib.engine import jobs
    from irlib.reproduce import UsageError, accumulation_factors

    p = _tiny_plan()
    (run,) = p.runs()
    real = cost.traced

    def trace(spec, test_hw=None, batch=None):   # this tiny run needs 1000 GiB at its batch of 4, little at 2
        if spec.size != "tiny":
            return real(spec, test_hw, batch)
        b = spec.schedule.batch if batch is None else batch
        return {"flops": 1e9, "allocated_gib": 0.01, "peak_gib": 1000.0 if b > 2 else 0.5, "eval_peak_gib": 0.1}

    monkeypatch.setattr(cost, "traced", trace)
    store = RunStore(tmp_path / "runs")
    lines: list[str] = []
    factors = accumulation_factors([p], store, "a10", echo=lines.append)
    assert factors == {run.key(): 2} and "EDSR-light x4 x2" in lines[0]
    seen: dict = {"accum": [], "micro": []}
    split = irlib.train.split_batch
    build = jobs.build_trainer

    def spy_split(batch, k):
        out = split(batch, k)
        seen["micro"].append((batch["lq"].shape[0], [m["lq"].shape[0] for m in out]))
        return out

    def spy_build(*a, **kw):
        tr = build(*a, **kw)
        seen["accum"].append(tr.accum)
        return tr

    monkeypatch.setattr(irlib.train, "split_batch", spy_split)
    monkeypatch.setattr(jobs, "build_trainer", spy_build)
    st = plan.execute(p, store, plan.Context("data", store.root), accum=factors)
    assert list(st.state) == ["done"], st.error.tolist()
    d = store.dir(run.key())
    assert json.loads((d / "job.json").read_text())["accum"] == 2
    assert json.loads((d / "done.json").read_text())["accum"] == 2
    assert seen["accum"] == [2] and seen["micro"] == [(4, [2, 2])] * 3           # 3 steps of 4 in two halves
    assert json.loads((d / "job.json").read_text())["spec"]["schedule"]["batch"] == 4   # the recipe is unchanged
    plan.submit_plans([p], store, plan.Context("data", store.root))               # a notebook's re-submission
    assert json.loads((d / "job.json").read_text())["accum"] == 2                 # keeps the recorded factor
    plan.submit_plans([p], store, plan.Context("data", store.root), accum={})     # reproduce without --gpu
    assert json.loads((d / "job.json").read_text())["accum"] == 1
    assert accumulation_factors([p], store, "a10") == {}                         # done runs cost nothing

    monkeypatch.setattr(cost, "traced", lambda spec, test_hw=None, batch=None: (
        real(spec, test_hw, batch) if spec.size != "tiny" else
        {"flops": 1e9, "allocated_gib": 0.01, "peak_gib": 1000.0, "eval_peak_gib": 0.1}))
    with pytest.raises(UsageError, match="1 runs do not fit one a10 even one image per micro-batch"):
        accumulation_factors([p], RunStore(tmp_path / "other"), "a10")
