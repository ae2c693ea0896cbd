"""Fault injection on the run store, the executors and `irlib reproduce` (issue #23): failures never look like
success, corrupt or truncated store files are named or healed (quarantined and redone, never read as done),
reading a finished store writes nothing, and rows do not depend on the order runs were built in.

Tiny plans (``Profile(..., scale="tiny")``: the offline photos, a few training steps) keep each case in seconds."""
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from irlib import plan
from irlib.engine import Builder, EvalSpec, Profile, RunStore, gather
from irlib.engine.jobs import load_model
from irlib.io import CorruptFile
from irlib.schedules import Schedule


def tiny_plan(steps: int = 4, extra_spn: bool = False, two_evals: bool = False, spn_lam: float = 1e-4) -> plan.Plan:
    P = Profile("smoke", "tiny", "random", smoke_schedule=Schedule(steps, 2, 32, 1e-3, grad_clip=1.0), scale="tiny")
    B = Builder("spn", P)
    a = B.seeds(B.run("EDSR-light", net_kw={"scale": 4}, train=[("div2k:train-x4", "srx4")],
                      schedule=P.smoke_schedule, label="EDSR-light x4"))
    ev = EvalSpec(B.testset("sr_benchmark:Set14-x4", "srx4"), channel="y", crop=4)
    B.measure("Table 8", "EDSR-light", "lambda=0", "Set14", a, ev, ("PSNR",))
    if two_evals:
        ev2 = EvalSpec(B.testset("sr_benchmark:B100-x4", "srx4", seed=7), channel="y", crop=4)
        B.measure("Table 8", "EDSR-light", "lambda=0", "B100", a, ev2, ("PSNR",))
    if extra_spn:
        from irlib.engine import Term

        b = tuple(r.with_terms(Term("spn", -spn_lam, (("lam", spn_lam), ("steps", (2, 5)), ("w", 0.1)))) for r in a)
        B.measure("Table 8", "EDSR-light+SPN", "lambda=1e-4", "Set14", b, ev, ("PSNR",), baseline=a,
                  baseline_label="EDSR-light")
    return B.plan


def _run(p, store):
    return plan.execute(p, store, plan.Context("data", store.root))


def _snapshot(root: Path) -> dict:
    return {str(f.relative_to(root)): (f.stat().st_mtime_ns, f.stat().st_size) for f in sorted(root.rglob("*"))}


def _status(out: Path, capsys) -> tuple[int, str]:
    from irlib.cli import main

    code = main(["status", "--out", str(out), "--profile", "smoke"])
    return code, capsys.readouterr().out


# ------------------------------------------------------------------------------------ 1. status tells the truth
def test_an_evaluation_failure_is_a_failure_and_is_retried_once_fixed(tmp_path, monkeypatch, capsys):
    from irlib.engine import runner

    p = tiny_plan(two_evals=True)
    out = tmp_path / "out"
    store = RunStore(out / "smoke" / "runs")
    real = runner.evaluate_run

    def broken(model, spec, ev, *a, **kw):   # the B100 evaluation fails (say, an unreadable test image)
        if ev.testset.seed == 7:
            raise OSError("test image unreadable")
        return real(model, spec, ev, *a, **kw)

    monkeypatch.setattr(runner, "evaluate_run", broken)
    st = _run(p, store)
    key = st.key[0]
    assert list(st.state) == ["failed"]
    assert "1 of 2 evaluations failed" in st.error[0] and "test image unreadable" in st.error[0]
    assert store.done(key) is not None and store.state(key) == "failed"   # trained, yet not done
    rows = gather(p, store)
    assert not np.isnan(rows.value[0]) and np.isnan(rows.value[1])      # the Set14 row stands, B100 says why
    assert "failed" in rows.notes[1] and "test image unreadable" in rows.notes[1]
    code, text = _status(out, capsys)
    assert code == 1 and "failed" in text and "evaluations failed" in text and "done" not in text.split("state")[1]
    assert plan.pending(store, [key]) == [key]
    final = store.dir(key) / "final.pt"
    mtime = final.stat().st_mtime_ns
    monkeypatch.setattr(runner, "evaluate_run", real)    # the cause is fixed: the re-run only evaluates
    st = _run(p, store)
    assert list(st.state) == ["done"] and st.error[0] == ""
    assert final.stat().st_mtime_ns == mtime and not (store.dir(key) / "error.json").exists()
    assert gather(p, store).value.notna().all()


# ------------------------------------------------------------------------------------ 2. a store that names or heals
@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished tiny run: its store, plan and rows (copied for each corruption case)."""
    root = tmp_path_factory.mktemp("finished") / "runs"
    p = tiny_plan(two_evals=True)
    store = RunStore(root)
    _run(p, store)
    return root, p, gather(p, store)


def _copy(finished, tmp_path):
    import shutil

    root, p, rows = finished
    shutil.copytree(root, tmp_path / "out" / "smoke" / "runs")
    store = RunStore(tmp_path / "out" / "smoke" / "runs")
    return store, p, rows, p.runs()[0].key()


def _quarantined(folder: Path, name: str) -> list[Path]:
    return list(folder.glob(f"{name}.corrupt-*"))


@pytest.mark.parametrize("damage", ["garbage", "empty", "truncated", "not-an-object"])
def test_a_corrupt_evaluation_record_is_quarantined_and_redone(finished, tmp_path, damage):
    store, p, rows, key = _copy(finished, tmp_path)
    f = next(iter(sorted((store.dir(key) / "evals").glob("*.json"))))
    text = f.read_text()
    f.write_text({"garbage": "\x00\x13not json", "empty": "", "truncated": text[: len(text) // 2],
                  "not-an-object": "[1, 2]"}[damage])
    assert store.state(key) == "partial"                   # never read as done
    assert _quarantined(f.parent, f.name) and not f.exists()
    st = _run(p, store)
    assert list(st.state) == ["done"]
    pd.testing.assert_frame_equal(gather(p, store), rows)   # the same numbers again


def test_a_corrupt_done_record_retrains_to_the_same_rows(finished, tmp_path):
    store, p, rows, key = _copy(finished, tmp_path)
    (store.dir(key) / "done.json").write_text('{"key": "abc", "steps"')
    assert store.state(key) == "pending" and store.done(key) is None
    assert _quarantined(store.dir(key), "done.json")
    g = gather(p, store)
    assert g.value.isna().all() and "not finished" in g.notes[0]
    assert list(_run(p, store).state) == ["done"]
    pd.testing.assert_frame_equal(gather(p, store), rows)


def test_a_corrupt_job_record_is_named_and_rewritten_from_the_plan(finished, tmp_path, capsys):
    store, p, rows, key = _copy(finished, tmp_path)
    job = store.dir(key) / "job.json"
    job.write_text("{\"kind\": \"run\", \"spe")
    with pytest.raises(CorruptFile, match=r"job\.json: not valid JSON.*re-run the plan"):
        store.job(key)
    pd.testing.assert_frame_equal(gather(p, store), rows)       # the results themselves are intact
    code, text = _status(tmp_path / "out", capsys)
    assert code == 1 and "corrupt" in text and "job.json" in text and "Traceback" not in text
    final = store.dir(key) / "final.pt"
    mtime = final.stat().st_mtime_ns
    assert list(_run(p, store).state) == ["done"]               # re-submitting heals it; nothing retrains
    assert final.stat().st_mtime_ns == mtime and _quarantined(job.parent, "job.json")
    pd.testing.assert_frame_equal(gather(p, store), rows)


def test_a_corrupt_error_record_does_not_break_status(finished, tmp_path, capsys):
    store, p, rows, key = _copy(finished, tmp_path)
    (store.dir(key) / "done.json").unlink()
    (store.dir(key) / "error.json").write_text("\xff garbage")
    code, text = _status(tmp_path / "out", capsys)
    assert code == 0 and "Traceback" not in text and key in text
    assert store.state(key) == "pending" and _quarantined(store.dir(key), "error.json")


def test_a_truncated_final_checkpoint_is_moved_aside_and_the_run_trains_again(finished, tmp_path):
    """Whoever reads it (its own evaluation, a study, an SPN negative run), an unreadable ``final.pt`` is moved
    aside with its ``done.json`` and evaluations, and the next execution trains the run again."""
    store, p, rows, key = _copy(finished, tmp_path)
    final = store.dir(key) / "final.pt"
    final.write_bytes(final.read_bytes()[:200])
    for f in (store.dir(key) / "evals").glob("*.json"):   # an evaluation still to do needs the weights
        f.unlink()
        break
    with pytest.raises(CorruptFile, match=r"final\.pt: unreadable or not this run's weights.*moved aside"):
        load_model(store, p.runs()[0])           # e.g. a study loading it: the run is set to train again
    assert store.state(key) == "pending"
    assert list(_run(p, store).state) == ["done"]
    assert _quarantined(store.dir(key), "final.pt") and _quarantined(store.dir(key), "done.json")
    pd.testing.assert_frame_equal(gather(p, store), rows)


def test_a_truncated_resume_checkpoint_restarts_training_from_scratch(finished, tmp_path, caplog):
    root, p, rows = finished
    store = RunStore(tmp_path / "runs")
    key = p.runs()[0].key()
    store.submit(p.runs()[0], [], plan.Context("data", store.root))
    ref = torch.load(root / key / "final.pt", weights_only=True)["model"]
    ckpt = store.dir(key) / "ckpt" / "last.pt"
    ckpt.parent.mkdir(parents=True)
    torch.save({"step": 2, "model": {k: v + 1 for k, v in ref.items()}}, ckpt)
    ckpt.write_bytes(ckpt.read_bytes()[:-300])                  # a full disk cut it short
    (store.dir(key) / ".final.pt.999999999.partial").write_bytes(b"litter of a killed writer")
    with caplog.at_level("WARNING"):
        assert list(_run(p, store).state) == ["done"]
    assert "training restarts from step 0" in caplog.text and "last.pt" in caplog.text
    assert not list(store.dir(key).glob(".*.partial"))
    got = torch.load(store.dir(key) / "final.pt", weights_only=True)["model"]
    for name in ref:
        torch.testing.assert_close(got[name], ref[name], rtol=0, atol=0)
    pd.testing.assert_frame_equal(gather(p, store), rows)


def test_reading_a_finished_store_writes_nothing(finished, tmp_path, capsys):
    """``gather``, ``irlib status`` and a re-run with nothing to do leave every file as it was (so they work on a
    read-only store; as root, chmod cannot show that, the unchanged snapshot does)."""
    _, p, rows = finished
    store = RunStore(tmp_path / "out" / "smoke" / "runs")
    _run(p, store)
    before = _snapshot(store.root)
    pd.testing.assert_frame_equal(gather(p, store), rows)
    assert _status(tmp_path / "out", capsys)[0] == 0
    assert list(_run(p, store).state) == ["done"]
    assert _snapshot(store.root) == before
    if os.geteuid() != 0:
        for f in store.root.rglob("*"):
            f.chmod(0o555 if f.is_dir() else 0o444)
        store.root.chmod(0o555)
        try:
            pd.testing.assert_frame_equal(gather(p, store), rows)
            assert list(_run(p, store).state) == ["done"]
        finally:
            for f in [store.root, *store.root.rglob("*")]:
                f.chmod(0o755 if f.is_dir() else 0o644)


# ------------------------------------------------------------------------------------ reproduce: exit codes, stale outputs
REPO = Path(__file__).resolve().parents[1]


def _nb(path: Path, code: str, extra: str = "") -> None:
    """test_reproduce's tiny notebook, with the paper notebooks' other CLI-owned parameters declared too."""
    from test_reproduce import _nb as make

    make(path, code, 'runs_dir = ""\nonly = ""\nskip_data = ""\n' + extra)


ROW = ("from irlib.engine import ROW_COLUMNS\nimport pandas as pd, os\nos.makedirs(out_dir, exist_ok=True)\n"
       "pd.DataFrame([dict(paper='spn', table='Table 8', method='EDSR-light', setting='lambda=0', dataset='Set14', "
       "metric='PSNR', value={value}, profile=profile, weights='random', notes='')], columns=ROW_COLUMNS)"
       ".to_csv(out_dir + '/results.csv', index=False)\n")


def _cli(*args, nbdir):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "irlib.cli", *args], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "IRLIB_NOTEBOOKS": str(nbdir), "PYTHONPATH": str(REPO)})


def test_a_failing_notebook_never_shows_the_previous_rows(tmp_path):
    nbdir = tmp_path / "nbs"
    nbdir.mkdir()
    _nb(nbdir / "alpha.ipynb", ROW.format(value=31.25))
    out = tmp_path / "out"
    r = _cli("reproduce", "--out", str(out), nbdir=nbdir)
    assert r.returncode == 0, r.stderr
    assert pd.read_csv(out / "smoke" / "results.csv").value.tolist() == [31.25]
    assert "31.25" in (out / "smoke" / "report.md").read_text()
    _nb(nbdir / "alpha.ipynb", "raise RuntimeError('broken cell')")
    r = _cli("reproduce", "--out", str(out), nbdir=nbdir)
    assert r.returncode == 1 and "1 of 1 notebooks failed (alpha)" in r.stderr
    assert pd.read_csv(out / "smoke" / "results.csv").empty                 # header only, not the old row
    assert pd.read_parquet(out / "smoke" / "results.parquet").empty
    assert "31.25" not in (out / "smoke" / "report.md").read_text()
    assert dict(zip(*[pd.read_csv(out / "smoke" / "status.csv")[c] for c in ("notebook", "status")])) == {"alpha": "failed"}
    assert not list((out / "smoke").glob(".*.partial"))


def test_parameters_the_command_line_owns_are_refused(tmp_path):
    from irlib.reproduce import UsageError, check_params

    nbdir = tmp_path / "nbs"
    nbdir.mkdir()
    _nb(nbdir / "alpha.ipynb", ROW.format(value=1.0))
    for name, option in [("out_dir", "--out"), ("data_root", "--data-root"), ("runs_dir", "--out"),
                         ("device", "--device"), ("seed", "--seed"), ("only", "--only"), ("skip_data", "--skip-missing")]:
        with pytest.raises(UsageError, match=f"-p {name}: set by irlib reproduce itself; use {option}"):
            check_params({"alpha": []}, {name: "x"})
    r = _cli("reproduce", "--out", str(tmp_path / "out"), "-p", "profile", "full", nbdir=nbdir)
    assert r.returncode == 2 and "-p profile: set by irlib reproduce itself; use --profile" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "out" / "smoke" / "alpha").exists()    # refused before anything ran


TYPED = ('steps = 3            # steps per variant (tiny); paper uses 20\nlr = 1e-3\nflag = False\n'
         'mode = "tiny"        # one of: tiny, paper ("paper": GPU only)\n'
         'label = "x"          # substrings to keep ("" = all of them)\n')


def test_parameter_values_are_checked_against_the_notebooks_types_before_anything_runs(tmp_path, monkeypatch):
    from irlib.reproduce import UsageError, check_params

    nbdir = tmp_path / "nbs"
    nbdir.mkdir()
    code = ROW.format(value=1.0).replace("notes=''", "notes=repr((steps, lr, flag, mode, label))")
    _nb(nbdir / "alpha.ipynb", code, extra=TYPED)
    monkeypatch.setenv("IRLIB_NOTEBOOKS", str(nbdir))
    ok = check_params({"alpha": []}, {"steps": "7", "lr": "2e-4", "flag": "True", "mode": "paper", "label": "1"})
    assert ok == {"alpha": {"steps": 7, "lr": 2e-4, "flag": True, "mode": "paper", "label": "1"}}
    for name, value, expected in [("steps", "ten", "expected an integer"), ("steps", "2.5", "expected an integer"),
                                  ("lr", "fast", "expected a number"), ("lr", "nan", "expected a number"),
                                  ("flag", "yes", "expected True or False"),
                                  ("mode", "huge", "expected one of tiny, paper")]:
        with pytest.raises(UsageError, match=rf"-p {name} '{value}': {expected} \(in alpha, default "):
            check_params({"alpha": []}, {name: value})
    out = tmp_path / "out"
    r = _cli("reproduce", "--out", str(out), "-p", "steps", "ten", nbdir=nbdir)
    assert r.returncode == 2 and "-p steps 'ten': expected an integer (in alpha, default 3)" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and not (out / "smoke" / "alpha").exists()
    # a text parameter given digits stays text, a number arrives as a number, the commented line is seen
    r = _cli("reproduce", "--out", str(out), "-p", "label", "0012", "-p", "lr", "0.5", "-p", "mode", "paper", nbdir=nbdir)
    assert r.returncode == 0, r.stderr
    assert pd.read_csv(out / "smoke" / "results.csv").notes[0] == repr((3, 0.5, False, "paper", "0012"))
    _nb(nbdir / "alpha.ipynb", "pass", extra="steps = (3\n")          # a broken parameters cell is named
    with pytest.raises(UsageError, match=r"alpha.ipynb: its parameters cell is not valid Python"):
        check_params({"alpha": []}, {"steps": "1"})


def test_reproduce_fails_when_the_notebook_ran_but_its_runs_did_not(tmp_path):
    """A paper notebook that ends without running (or after failing) its plan's runs is a failure: the exit code
    is 1 and the status says how many runs/studies failed or did not finish."""
    nbdir = tmp_path / "nbs"
    nbdir.mkdir()
    _nb(nbdir / "spn.ipynb", ROW.format(value=1.0))     # writes a row, runs nothing
    out = tmp_path / "out"
    r = _cli("reproduce", "--out", str(out), "--only", "spn/Table 8", nbdir=nbdir)
    assert r.returncode == 1, r.stdout + r.stderr
    status = pd.read_csv(out / "smoke" / "status.csv", keep_default_na=False)
    assert status.status.tolist() == ["failed"]
    n = len(plan.build("spn", "smoke").select(["Table 8"]).runs())
    assert f"{n} of {n} runs/studies not finished" in status.error[0] and "irlib status" in status.error[0]
    assert "1 of 1 notebooks failed (spn)" in r.stderr


# ------------------------------------------------------------------------------------ 3. the record cannot lie
def _denoise_plan() -> plan.Plan:
    P = Profile("t", "tiny", "random", smoke_schedule=Schedule(2, 2, 32, 1e-3), scale="paper")
    B = Builder("dinoir", P)
    r = B.run("Restormer", train=[("cbsd68:test", "noise25")], schedule=P.smoke_schedule, label="Restormer tiny")
    B.measure("T", "Restormer", "", "CBSD68", (r,), EvalSpec(B.testset("cbsd68:test", "noise25")), ("PSNR",))
    return B.plan


def test_other_data_under_another_root_is_refused_naming_both_roots(tmp_path):
    import shutil

    from irlib.data.splits import synth
    from irlib.engine.store import DataMismatch

    a, b = tmp_path / "a", tmp_path / "b"
    synth(a, n=2, side=48, only=["cbsd68"])
    synth(b, n=3, side=48, only=["cbsd68"])
    p = _denoise_plan()
    store = RunStore(tmp_path / "runs")
    key = p.runs()[0].key()
    assert list(plan.execute(p, store, plan.Context(a, store.root)).state) == ["done"]
    rec = json.loads((store.dir(key) / "job.json").read_text())["data"]
    assert rec["root"] == str(a.resolve()) and rec["refs"]["cbsd68:test"]["files"] == 2
    rows = gather(p, store)
    job = (store.dir(key) / "job.json").read_text()
    with pytest.raises(DataMismatch, match=rf"{b.resolve()} \(--data-root now\) holds other data than {a.resolve()}"):
        plan.execute(p, store, plan.Context(b, store.root))
    assert (store.dir(key) / "job.json").read_text() == job          # the record is not rewritten
    shutil.copytree(a, tmp_path / "copy")                            # the same data elsewhere: reused, not retrained
    mtime = (store.dir(key) / "final.pt").stat().st_mtime_ns
    assert list(plan.execute(p, store, plan.Context(tmp_path / "copy", store.root)).state) == ["done"]
    assert (store.dir(key) / "final.pt").stat().st_mtime_ns == mtime
    assert json.loads((store.dir(key) / "job.json").read_text())["data"]["root"] == str(a.resolve())
    pd.testing.assert_frame_equal(gather(p, store), rows)
    synth(tmp_path / "extra", n=3, side=48, only=["cbsd68"])       # the data under the first root changes
    shutil.rmtree(a / "cbsd68")
    shutil.copytree(tmp_path / "extra" / "cbsd68", a / "cbsd68")
    with pytest.raises(DataMismatch, match=rf"the data under {a.resolve()} changed"):
        plan.execute(p, store, plan.Context(a, store.root))


# ------------------------------------------------------------------------------------ 5. determinism
def test_random_feature_networks_do_not_depend_on_who_built_them_first():
    from irlib.engine import features
    from irlib.engine.features import FeatureBank

    def build(rng_seed: int) -> dict:
        features._CACHE.clear()
        torch.manual_seed(rng_seed)
        torch.rand(rng_seed + 1)
        before = torch.get_rng_state()
        fb = FeatureBank("random", "tiny")
        nets = {"vgg": fb.vgg("vgg19"), "vgg16": fb.vgg("vgg16", ("relu2_2",)), "dino": fb.dino(), "adm": fb.adm()}
        assert torch.equal(torch.get_rng_state(), before)   # building never moves the caller's RNG
        return {f"{n}.{k}": v.clone() for n, net in nets.items() for k, v in net.state_dict().items()}

    a, b = build(1), build(7)
    assert a.keys() == b.keys() and len(a) > 20
    for k in a:
        assert torch.equal(a[k], b[k]), k
    features._CACHE.clear()


def test_rows_are_bit_identical_whatever_the_order_runs_were_built_in(tmp_path):
    """The SPN run's random VGG is the same whether it is built first by this run, by another one, or after
    other code moved the global RNG: rerunning in another order gives the same bits."""
    from irlib.engine import features
    from irlib.engine.features import FeatureBank

    p = tiny_plan(steps=12, extra_spn=True, spn_lam=0.5)   # a weight large enough to move the bits
    features._CACHE.clear()
    ref = RunStore(tmp_path / "ref")
    assert list(_run(p, ref).state) == ["done", "done"]
    other = RunStore(tmp_path / "other")
    plan.submit_plans([p], other, plan.Context("data", other.root))
    features._CACHE.clear()
    torch.manual_seed(12345)
    spn_run = p.runs()[-1]                        # somebody else builds the VGG first, under another RNG state
    FeatureBank.for_run(spn_run, "cpu", other.context(spn_run.key())).vgg()
    keys = [r.key() for r in p.runs()]
    for k in reversed(keys):                      # and the +SPN run trains before its baseline
        plan.run_job(other.root, k)
    for k in keys:
        a = torch.load(ref.dir(k) / "final.pt", weights_only=True)["model"]
        b = torch.load(other.dir(k) / "final.pt", weights_only=True)["model"]
        for name in a:
            assert torch.equal(a[name], b[name]), (k, name)
    pd.testing.assert_frame_equal(gather(p, ref).drop(columns="runs"), gather(p, other).drop(columns="runs"),
                                  check_exact=True)


def test_rows_are_bit_identical_inline_and_with_one_or_two_local_workers(tmp_path, monkeypatch):
    """Workers get ``OMP_NUM_THREADS`` = cores / jobs and a notebook kernel has its own count; every job runs
    with the thread count recorded in its ``job.json`` (1 here), so the weights and rows do not depend on the
    executor or ``--jobs``."""
    from irlib.engine.execute import LocalExecutor

    monkeypatch.delenv("IRLIB_THREADS", raising=False)
    p = tiny_plan(steps=12, extra_spn=True, spn_lam=0.5)
    stores = {}
    before = torch.get_num_threads()
    torch.set_num_threads(2)            # the caller's count differs from the recorded one, and is restored
    try:
        stores["inline"] = RunStore(tmp_path / "inline")
        assert list(_run(p, stores["inline"]).state) == ["done", "done"]
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    for jobs in (1, 2):
        stores[jobs] = store = RunStore(tmp_path / f"local{jobs}")
        st = plan.execute(p, store, plan.Context("data", store.root), executor=LocalExecutor(store, jobs=jobs))
        assert list(st.state) == ["done", "done"], st.error.tolist()
    keys = [r.key() for r in p.runs()]
    assert {json.loads((stores[1].dir(k) / "job.json").read_text())["threads"] for k in keys} == {1}
    ref = gather(p, stores["inline"]).drop(columns="runs")
    for name in (1, 2):
        for k in keys:
            a = torch.load(stores["inline"].dir(k) / "final.pt", weights_only=True)["model"]
            b = torch.load(stores[name].dir(k) / "final.pt", weights_only=True)["model"]
            assert all(torch.equal(a[n], b[n]) for n in a), (name, k)
        pd.testing.assert_frame_equal(gather(p, stores[name]).drop(columns="runs"), ref, check_exact=True)


def test_a_wrong_thread_count_is_refused_when_the_job_is_recorded(tmp_path, monkeypatch):
    monkeypatch.setenv("IRLIB_THREADS", "many")
    with pytest.raises(ValueError, match="IRLIB_THREADS='many': expected a positive integer"):
        plan.submit_plans([tiny_plan()], RunStore(tmp_path), plan.Context("data", tmp_path))
    monkeypatch.setenv("IRLIB_THREADS", "3")
    p = tiny_plan()
    store = RunStore(tmp_path)
    plan.submit_plans([p], store, plan.Context("data", tmp_path))
    assert json.loads((store.dir(p.runs()[0].key()) / "job.json").read_text())["threads"] == 3


# ------------------------------------------------------------------------------------ 4. images in every mode
def _png16(path: Path, a: np.ndarray) -> None:
    """A 16-bit PNG (grey HxW or RGB HxWx3 uint16) written chunk by chunk: Pillow cannot write 16-bit RGB."""
    import struct
    import zlib

    h, w = a.shape[:2]
    raw = b"".join(b"\0" + a[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", w, h, 16, 2 if a.ndim == 3 else 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))


def _smooth_rgb(h: int = 24, w: int = 32) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // (w - 1), y * 255 // (h - 1), (x + y) * 255 // (h + w - 2)], -1).astype(np.uint8)


def _expected_rgb(a: np.ndarray) -> torch.Tensor:
    a = np.repeat(a[..., None], 3, 2) if a.ndim == 2 else a
    return torch.from_numpy(a.astype(np.float32) / 255).permute(2, 0, 1)


def test_images_in_every_mode_are_read_as_their_colours(tmp_path):
    """16-bit grey used to come out white (``convert("RGB")`` clips levels above 255); each mode a dataset may
    hold is checked against the colours it encodes."""
    from PIL import Image

    from irlib.data import PairedFolder, load_image

    rng = np.random.default_rng(0)
    rgb = _smooth_rgb()
    grey16 = rng.integers(0, 65536, rgb.shape[:2]).astype(np.uint16)
    rgb16 = rng.integers(0, 65536, rgb.shape).astype(np.uint16)
    _png16(tmp_path / "grey16.png", grey16)
    _png16(tmp_path / "rgb16.png", rgb16)
    pal = Image.fromarray(rgb).quantize(16)
    pal.save(tmp_path / "palette_alpha.png", transparency=0)
    rgba = np.concatenate([rgb, rng.integers(0, 256, rgb.shape[:2] + (1,)).astype(np.uint8)], 2)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(rgba[..., [0, 3]], "LA").save(tmp_path / "la.png")
    Image.fromarray(rgb[..., 0] > 127).save(tmp_path / "bits.png")
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=100, subsampling=0)
    Image.fromarray(rgb).save(tmp_path / "rgb.jpg", quality=100, subsampling=0)
    exact = {"grey16.png": (grey16 >> 8).astype(np.uint8), "rgb16.png": (rgb16 >> 8).astype(np.uint8),
             "palette_alpha.png": np.asarray(pal.convert("RGB")), "rgba.png": rgb, "la.png": rgb[..., 0],
             "bits.png": np.where(rgb[..., 0] > 127, 255, 0).astype(np.uint8)}
    for name, want in exact.items():
        got = load_image(tmp_path / name)
        assert got.shape == (3, 24, 32) and got.dtype == torch.float32, name
        assert torch.equal(got, _expected_rgb(want)), name
    cmyk, ref = load_image(tmp_path / "cmyk.jpg"), load_image(tmp_path / "rgb.jpg")
    assert (cmyk - _expected_rgb(rgb)).abs().mean() < 2 / 255 and (cmyk - ref).abs().max() < 12 / 255
    # through a dataset folder: a CMYK degraded image and a 16-bit clean one pair up like any other
    (tmp_path / "lq").mkdir()
    (tmp_path / "gt").mkdir()
    (tmp_path / "cmyk.jpg").rename(tmp_path / "lq" / "0001.jpg")
    (tmp_path / "rgb16.png").rename(tmp_path / "gt" / "0001.png")
    item = PairedFolder(tmp_path / "lq", tmp_path / "gt")[0]
    assert torch.equal(item["lq"], cmyk) and torch.equal(item["gt"], _expected_rgb((rgb16 >> 8).astype(np.uint8)))


@pytest.mark.parametrize("mode", ["F", "I", "LAB", "truncated"])
def test_images_without_colours_or_damaged_are_refused_naming_the_file(tmp_path, mode):
    from PIL import Image

    from irlib.data import DatasetError, PairedFolder

    rgb = _smooth_rgb()
    for d in ("lq", "gt"):
        (tmp_path / d).mkdir()
        Image.fromarray(rgb).save(tmp_path / d / "0001.png")
    bad = tmp_path / "lq" / "0002.tif"
    if mode == "F":
        Image.fromarray(rgb[..., 0].astype(np.float32) / 255).save(bad)
    elif mode == "I":
        Image.fromarray(rgb[..., 0].astype(np.int32) * 1000).save(bad)
    elif mode == "LAB":
        Image.fromarray(rgb).convert("LAB").save(bad)
    else:
        Image.fromarray(rgb).save(bad)
        bad.write_bytes(bad.read_bytes()[:400])
    Image.fromarray(rgb).save(tmp_path / "gt" / "0002.png")
    ds = PairedFolder(tmp_path / "lq", tmp_path / "gt")
    assert ds[0]["lq"].shape == (3, 24, 32)
    expected = {"F": "32-bit float pixels", "I": "32-bit integer pixels", "LAB": "CIELab colours",
                "truncated": "Re-download it"}[mode]
    with pytest.raises(DatasetError, match=rf"cannot read image {bad}: .*{expected}"):
        ds[1]


# ------------------------------------------------------------------------------------ 6. downloads: short bodies, litter
@pytest.fixture
def short_server(tmp_path):
    """An HTTP server whose ``/short.bin`` announces 4096 bytes and sends 1000; ``/whole.bin`` sends all 4096."""
    import http.server
    import threading

    body = bytes(range(256)) * 16

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[:1000] if self.path == "/short.bin" else body)
            self.wfile.flush()
            self.close_connection = True

        def log_message(self, *a):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", body
    httpd.shutdown()


def test_a_body_shorter_than_its_content_length_is_refused_even_unpinned(short_server, tmp_path, monkeypatch):
    from irlib import weights as W
    from irlib.data import DatasetError
    from irlib.data.fetch import fetch

    url, body = short_server
    out = tmp_path / "data"
    with pytest.raises(DatasetError, match=r"announced Content-Length"):
        fetch("short", out, allow_unverified=True, manifest={"name": "short", "files": [{"url": f"{url}/short.bin"}]})
    assert list(out.iterdir()) == []                      # nothing extracted, nothing pinned, no .partial
    stale = out / ".partial" / "whole.999999999.abcdefgh"   # a killed fetch's staging folder (its pid is gone)
    stale.mkdir(parents=True)
    (stale / "whole.bin").write_bytes(b"half")
    target = fetch("whole", out, allow_unverified=True, manifest={"name": "whole", "files": [{"url": f"{url}/whole.bin"}]})
    assert (target / "whole.bin").read_bytes() == body and not (out / ".partial").exists()
    # torchvision-kind weights (into torch.hub's cache) go through the same check
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    mdir = tmp_path / "manifests"
    mdir.mkdir()
    monkeypatch.setenv("IRLIB_WEIGHT_MANIFESTS", str(mdir))
    import yaml

    for name, path in (("tvshort", "short.bin"), ("tvwhole", "whole.bin")):
        (mdir / f"{name}.yaml").write_text(yaml.safe_dump({
            "name": name, "title": f"test {name}", "kind": "torchvision", "url": f"{url}/{path}",
            "filename": f"{name}.pth", "sha256": None, "size": None, "manual": None, "source": "tests", "used_by": [],
            "network": "irlib.models.swinir:SwinIR.tiny", "args": {"scale": 2}, "container": "params"}))
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / ".tvwhole.pth.999999999.partial").write_bytes(b"litter")
    with pytest.raises(W.WeightsError, match=r"announced Content-Length"):
        W.fetch_weights("tvshort", tmp_path / "unused", allow_unverified=True)
    assert not (cache / "tvshort.pth").exists()
    got = W.fetch_weights("tvwhole", tmp_path / "unused", allow_unverified=True)
    assert got.read_bytes() == body and sorted(p.name for p in cache.iterdir()) == ["tvwhole.pth"]


def test_random_cub_classifiers_are_rebuilt_from_their_seed_not_saved(tmp_path):
    """Smoke/rehearsal fine-tune randomly initialised classifiers for a few steps: the same weights every time
    (whatever the RNG state before), and nothing of them written under ``<run store>/_cub``."""
    from types import SimpleNamespace

    from irlib.engine.features import FeatureBank
    from irlib.papers.diffloss.figures import cub_classifier

    ctx = SimpleNamespace(store=SimpleNamespace(root=tmp_path / "runs"), spec=SimpleNamespace(limits=None),
                          fb=FeatureBank("random", "tiny"), data_root=str(tmp_path), device="cpu")
    sched = Schedule(2, 2, 32, 1e-3)
    torch.manual_seed(1)
    a = cub_classifier(ctx, "resnet18", "offline", sched, 32, seed=0).state_dict()
    torch.manual_seed(2)
    torch.rand(7)
    b = cub_classifier(ctx, "resnet18", "offline", sched, 32, seed=0).state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert not [p for p in (tmp_path / "runs" / "_cub").rglob("*") if p.suffix in (".pt", ".pth")]


def test_a_truncated_final_checkpoint_found_while_evaluating_retrains_in_the_same_call(finished, tmp_path):
    store, p, rows, key = _copy(finished, tmp_path)
    final = store.dir(key) / "final.pt"
    final.write_bytes(final.read_bytes()[:-100])
    next(iter((store.dir(key) / "evals").glob("*.json"))).unlink()
    assert store.state(key) == "partial"
    assert list(_run(p, store).state) == ["done"]
    assert _quarantined(store.dir(key), "final.pt") and _quarantined(store.dir(key), "evals")
    pd.testing.assert_frame_equal(gather(p, store), rows)


# ------------------------------------------------------------------------------------ 5. no orphans
def _tree(pid: int) -> list:
    import psutil

    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _alive(procs: list) -> list:
    import psutil

    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


def test_killing_reproduce_with_sigkill_leaves_no_papermill_or_kernel_behind(tmp_path):
    """``kill -9`` of the main ``irlib reproduce`` process alone (no process group signal): papermill, the
    notebook's kernel and what the kernel started all die with it within seconds, not at the end of the cell."""
    import signal
    import subprocess
    import sys
    import time

    pytest.importorskip("psutil")
    if not sys.platform.startswith("linux"):
        pytest.skip("parent-death signals are Linux-only")
    nbdir = tmp_path / "nbs"
    nbdir.mkdir()
    _nb(nbdir / "alpha.ipynb", "import os, time\nos.makedirs(out_dir, exist_ok=True)\n"
                               "open(out_dir + '/started', 'w').write(str(os.getpid()))\ntime.sleep(600)\n")
    out = tmp_path / "out"
    p = subprocess.Popen([sys.executable, "-m", "irlib.cli", "reproduce", "--out", str(out)], cwd=REPO,
                         env={**os.environ, "IRLIB_NOTEBOOKS": str(nbdir), "PYTHONPATH": str(REPO)},
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    started = out / "smoke" / "alpha" / "started"
    tree: list = []
    try:
        deadline = time.time() + 120
        while not (started.is_file() and started.read_text()) and time.time() < deadline and p.poll() is None:
            time.sleep(0.2)
        assert started.is_file(), "the notebook never started"
        tree = _tree(p.pid)
        assert int(started.read_text()) in {q.pid for q in tree}   # the kernel is in reproduce's tree
        assert len(tree) >= 3                                       # reproduce, papermill, the kernel
        os.kill(p.pid, signal.SIGKILL)
        p.wait(10)
        deadline = time.time() + 15
        while _alive(tree[1:]) and time.time() < deadline:
            time.sleep(0.2)
        left = _alive(tree[1:])
        assert not left, [(q.pid, q.cmdline()[:4]) for q in left]
    finally:
        p.kill()
        for q in _alive(tree[1:]):
            q.kill()


def test_a_busy_local_worker_dies_with_the_process_that_started_it(tmp_path):
    """The local executor's worker is in a session of its own (so Ctrl-C reaches it only through ``terminate``);
    when the process driving it is killed with SIGKILL mid-run, the worker gets SIGTERM (parent-death signal),
    checkpoints and exits instead of training to the end."""
    import signal
    import subprocess
    import sys
    import time

    if not sys.platform.startswith("linux"):
        pytest.skip("parent-death signals are Linux-only")
    p = tiny_plan(steps=100_000)
    store = RunStore(tmp_path / "runs")
    plan.submit_plans([p], store, plan.Context("data", store.root))
    key = p.runs()[0].key()
    driver = subprocess.Popen(
        [sys.executable, "-c", ("import sys\nfrom irlib.engine import RunStore\nfrom irlib.engine.execute import "
                                "LocalExecutor\nLocalExecutor(RunStore(sys.argv[1]), jobs=1).run([sys.argv[2]])\n"),
         str(store.root), key],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    workers: list[int] = []
    try:
        deadline = time.time() + 180
        # past the first optimiser step (a progress record also exists while the model is still being built)
        while (store.progress(key) or {}).get("step", 0) < 1 and time.time() < deadline and driver.poll() is None:
            time.sleep(0.3)
        assert (store.progress(key) or {}).get("step", 0) >= 1, "the worker never started training"
        import psutil

        workers = [c.pid for c in psutil.Process(driver.pid).children()]
        assert len(workers) == 1
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(10)
        deadline = time.time() + 30
        while _alive([psutil.Process(w) for w in workers if psutil.pid_exists(w)]) and time.time() < deadline:
            time.sleep(0.2)
        assert not psutil.pid_exists(workers[0]) or not _alive([psutil.Process(workers[0])]), "worker still training"
        logs = sorted((store.root / "_logs").glob("worker-*.log"))
        said = "\n".join(ln for f in logs for ln in f.read_text().replace("\r", "\n").splitlines()
                         if ln.strip() and not ln.lstrip().startswith("train:"))[-6000:]
        err = store.dir(key) / "error.json"
        said += "\nerror.json: " + (err.read_text()[-3000:] if err.is_file() else "none")
        said += "\nrun dir: " + " ".join(sorted(str(f.relative_to(store.dir(key))) for f in store.dir(key).rglob("*")))
        assert (store.dir(key) / "ckpt" / "last.pt").is_file(), f"no checkpoint on the way out; worker log:\n{said}"
        assert store.done(key) is None
    finally:
        driver.kill()
        for w in workers:
            try:
                os.kill(w, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_the_device_is_checked_before_anything_runs(tmp_path, monkeypatch):
    """A CUDA device this machine does not have is refused up front (exit 2 from the CLI), naming the option;
    Slurm runs are not checked here, since their GPUs are on the nodes."""
    import torch

    from irlib.reproduce import UsageError, check_device, reproduce

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UsageError, match="--device cuda: no CUDA device is visible"):
        reproduce(profile="smoke", out=tmp_path, device="cuda", only=["spn"])
    assert not (tmp_path / "smoke").exists()            # refused before the output folder or any run
    with pytest.raises(UsageError, match="cpu, cuda or cuda:N"):
        check_device("gpu0")
    check_device("cuda:1", executor="slurm")             # the nodes' GPUs: not this machine's to check
    check_device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(UsageError, match="has 1 CUDA device"):
        check_device("cuda:1")
    check_device("cuda:0")


def test_selections_of_figures_or_studies_alone_work():
    """--only a figure drawn from tables brings those tables' rows; a study-only selection has no runs and the
    plan command still answers (no traceback)."""
    from irlib.cli import main

    spn = plan.build("spn", "smoke").select(["Fig. 2"])
    assert [f.figure for f in spn.figures] == ["Fig. 2"] and {r.key.table for r in spn.rows} == {
        "Table 1", "Table 2", "Table 3", "Table 4"} and spn.runs()
    fig1a = plan.build("dinoir", "smoke").select(["Fig. 1a"])
    assert {r.key.table for r in fig1a.rows} == {"Table 1", "Fig. 1a"}
    study = plan.build("dinoir", "smoke").select(["Fig. 3b"])
    assert study.runs() == [] and len(study.studies()) == 1
    assert main(["plan", "--profile", "smoke", "--only", "dinoir/Fig. 3b"]) == 0


# ------------------------------------------------------------------------------------ a disk that fills up
@pytest.fixture
def small_disk(tmp_path):
    """A 64 KiB tmpfs (root only; skipped where mounting is not allowed), unmounted afterwards."""
    import subprocess

    disk = tmp_path / "disk"
    disk.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip() or r.returncode})")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_a_full_disk_fails_the_run_leaves_no_partial_file_and_a_rerun_with_space_gives_the_same_rows(
        finished, small_disk):
    """The run's weights (131 KB) do not fit in 64 KiB: the job fails naming the full disk, nothing half-written is
    left (no done.json, no final.pt, no .partial), and once the disk has room the same plan trains to the rows
    of an undisturbed run, bit for bit."""
    import subprocess

    _, p, rows = finished
    store = RunStore(small_disk / "runs")
    st = _run(p, store)
    key = p.runs()[0].key()
    assert list(st.state) == ["failed"], st.to_string()
    assert "No space left on device" in st.error.iloc[0]
    left = [f.name for f in (small_disk / "runs").rglob("*") if f.is_file()]
    assert "done.json" not in left and "final.pt" not in left and not [n for n in left if n.endswith(".partial")]
    assert not (store.dir(key) / "evals").exists() or not any((store.dir(key) / "evals").iterdir())
    subprocess.run(["mount", "-o", "remount,size=200m", str(small_disk)], check=True)
    st = _run(p, store)
    assert list(st.state) == ["done"], st.to_string()
    pd.testing.assert_frame_equal(gather(p, store).drop(columns=["runs"], errors="ignore"),
                                  rows.drop(columns=["runs"], errors="ignore"))


def test_a_failure_the_store_cannot_record_is_still_a_failure(tmp_path, monkeypatch):
    """When even error.json cannot be written (a full or read-only store), the job is reported failed with what
    the executor saw, never as pending."""
    import irlib.engine.jobs as jobs

    p = tiny_plan(steps=2)

    def broken(*a, **kw):
        raise RuntimeError("the data loader broke")

    def no_record(path, text):
        raise OSError(30, "Read-only file system", str(path))

    monkeypatch.setattr(jobs, "_train", broken)
    monkeypatch.setattr(jobs, "atomic_write_text", no_record)
    st = _run(p, RunStore(tmp_path / "runs"))
    assert list(st.state) == ["failed"] and "the data loader broke" in st.error.iloc[0]


def test_kills_at_random_points_then_a_rerun_give_the_undisturbed_rows(finished, tmp_path):
    """SIGKILL a job's process at seeded random moments (while it imports, builds, trains, checkpoints, evaluates
    or writes its records), three times in a row on the same store, then let it finish: the rows equal an
    undisturbed run's bit for bit and no .partial file is left."""
    import random
    import signal
    import subprocess
    import sys
    import time

    _, p, rows = finished
    store = RunStore(tmp_path / "runs")
    plan.submit_plans([p], store, plan.Context("data", store.root))
    key = p.runs()[0].key()
    cmd = [sys.executable, "-c", f"from irlib.engine.jobs import run_job; run_job({str(store.root)!r}, {key!r})"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    t = time.time()
    probe = RunStore(tmp_path / "probe")   # how long one undisturbed job takes here, start to finish
    plan.submit_plans([p], probe, plan.Context("data", probe.root))
    subprocess.run([sys.executable, "-c", f"from irlib.engine.jobs import run_job; run_job({str(probe.root)!r}, "
                    f"{key!r})"], env=env, check=True, capture_output=True)
    whole = time.time() - t
    rng = random.Random(1234)
    for _ in range(3):
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        time.sleep(rng.uniform(0.3, 1.0) * whole)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        if store.state(key) == "done":
            break
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    assert store.state(key) == "done"
    assert not list(store.dir(key).rglob("*.partial"))
    pd.testing.assert_frame_equal(gather(p, store).drop(columns=["runs"], errors="ignore"),
                                  rows.drop(columns=["runs"], errors="ignore"))


def test_a_worker_checkpoints_through_repeated_sigterms(tmp_path):
    """A parent that dies with several live threads sends the worker its parent-death SIGTERM once per exiting
    thread. The first makes the job checkpoint; the next ones, arriving while it saves, must not interrupt that
    save (they once did: no ckpt/last.pt, a flaky kill test). Three SIGTERMs back to back: the worker still
    leaves its checkpoint, reports nothing to a closed pipe, and exits 130."""
    import signal
    import subprocess
    import sys
    import time

    p = tiny_plan(steps=100_000)
    store = RunStore(tmp_path / "runs")
    plan.submit_plans([p], store, plan.Context("data", store.root))
    key = p.runs()[0].key()
    w = subprocess.Popen([sys.executable, "-m", "irlib.engine.worker", str(store.root), "cpu"], cwd=REPO,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        w.stdin.write(key + "\n")
        w.stdin.flush()
        deadline = time.time() + 180
        while (store.progress(key) or {}).get("step", 0) < 1 and time.time() < deadline and w.poll() is None:
            time.sleep(0.2)
        assert (store.progress(key) or {}).get("step", 0) >= 1, w.stderr.read()[-2000:] if w.poll() is not None else ""
        w.stdout.close()   # the executor is gone: the worker's protocol pipe is broken
        for _ in range(3):
            w.send_signal(signal.SIGTERM)
            time.sleep(0.002)
        rc = w.wait(60)
        err = w.stderr.read()
        assert rc == 130, err[-3000:]
        assert (store.dir(key) / "ckpt" / "last.pt").is_file(), err[-3000:]
        assert err.count("checkpointing and stopping") == 1 and "Traceback" not in err, err[-3000:]
        assert store.done(key) is None
    finally:
        if w.poll() is None:
            w.kill()


def test_a_full_output_disk_ends_reproduce_with_a_message_not_a_traceback(tmp_path, small_disk):
    """``irlib reproduce --out`` on a disk that fills up: the notebook that cannot write fails, reproduce's own
    summary files cannot be written either, and the command exits 1 naming the file and the full disk (no
    traceback, no ``.partial`` left, no top-level results claiming success); with room, a re-run succeeds."""
    import subprocess

    nbdir = tmp_path / "nbs"
    nbdir.mkdir()
    _nb(nbdir / "alpha.ipynb", ROW.format(value=31.25) + "open(out_dir + '/blob.bin', 'wb').write(b'x' * 200_000)\n")
    out = small_disk / "out"
    r = _cli("reproduce", "--out", str(out), nbdir=nbdir)
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr and "No space left on device" in r.stderr, r.stderr
    assert str(out / "smoke") in r.stderr
    assert not (out / "smoke" / "results.csv").exists() and not list(out.rglob("*.partial"))
    subprocess.run(["mount", "-o", "remount,size=200m", str(small_disk)], check=True)
    r = _cli("reproduce", "--out", str(out), nbdir=nbdir)
    assert r.returncode == 0, r.stderr
    assert pd.read_csv(out / "smoke" / "results.csv").value.tolist() == [31.25]


def test_the_local_executor_keeps_what_each_failed_job_said(tmp_path):
    """Like the inline executor, the local one keeps each failed job's message (``failures``), which
    ``execute()`` reports for a job whose store could not record its error; a job that did not fail has none."""
    from irlib.engine.execute import LocalExecutor

    P = Profile("x", "tiny", "random", smoke_schedule=Schedule(2, 2, 32, 1e-3), scale="paper")   # real data refs
    B = Builder("spn", P)
    run = B.run("EDSR-light", net_kw={"scale": 4}, train=[("div2k:train-x4", "srx4")], schedule=P.smoke_schedule)
    B.measure("Table 8", "EDSR-light", "lambda=0", "Set14", run,
              EvalSpec(B.testset("sr_benchmark:Set14-x4", "srx4"), channel="y", crop=4), ("PSNR",))
    store = RunStore(tmp_path / "runs")
    plan.submit_plans([B.plan], store, plan.Context(tmp_path / "no-data-here", store.root))
    key = run.key()
    ex = LocalExecutor(store, jobs=1)
    ex.run([key])
    assert key in ex.failures and "no-data-here" in ex.failures[key], ex.failures
