"""The run store and the executors: identical specs train once, finished runs are not repeated, a killed run
resumes to the same weights, a half-written run is never read as done, failures are recorded."""
import json
import os
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest
import torch

from irlib import plan
from irlib.engine import Builder, EvalSpec, Profile, RunStore, gather
from irlib.engine.store import load_spec
from irlib.schedules import Schedule

PROFILE = Profile("smoke", "tiny", "random", smoke_schedule=Schedule(40, 2, 32, 1e-3, grad_clip=1.0), scale="tiny")


def tiny_plan(steps: int = 40, seeds: int = 1, extra_spn: bool = True) -> plan.Plan:
    P = Profile("smoke", "tiny", "random", smoke_schedule=Schedule(steps, 2, 32, 1e-3, grad_clip=1.0), seeds=seeds, scale="tiny")
    B = Builder("spn", P)
    base = B.run("EDSR-light", net_kw={"scale": 4}, train=[("div2k:train-x4", "srx4")], schedule=P.smoke_schedule,
                 label="EDSR-light x4")
    a = B.seeds(base)
    ev = EvalSpec(B.testset("sr_benchmark:Set14-x4", "srx4"), channel="y", crop=4)
    B.measure("Table 8", "EDSR-light", "lambda=0", "Set14", a, ev, ("PSNR",))
    if extra_spn:
        from irlib.engine import Term

        b = tuple(r.with_terms(Term("spn", -1e-4, (("lam", 1e-4), ("steps", (2, 5)), ("w", 0.1)))) for r in a)
        B.measure("Table 8", "EDSR-light+SPN", "lambda=1e-4", "Set14", b, ev, ("PSNR",), baseline=a,
                  baseline_label="EDSR-light")
    return B.plan


def test_spec_roundtrip_keeps_the_key(tmp_path):
    p = plan.build("spn", "full")
    store = RunStore(tmp_path)
    for r in p.runs()[:12]:
        k = store.submit(r, [])
        assert load_spec(json.dumps(store.job(k)["spec"])).key() == k == r.key()
    again = plan.build("spn", "full")
    assert [r.key() for r in again.runs()] == [r.key() for r in p.runs()]  # deterministic across builds


def test_inline_runs_once_and_only_adds_missing_evals(tmp_path):
    p = tiny_plan(steps=6, extra_spn=False)
    store = RunStore(tmp_path / "runs")
    st = plan.execute([p, p], store, plan.Context('data', store.root))  # the same run asked twice: one job
    assert list(st.state) == ["done"]
    key = st.key[0]
    final = store.dir(key) / "final.pt"
    mtime = final.stat().st_mtime_ns
    assert not (store.dir(key) / "ckpt").exists()  # finished runs keep only their final weights
    done = store.done(key)
    assert done["steps"] == 6 and done["code"]["irlib"] and done["env"]["torch"] == torch.__version__
    plan.execute(p, store, plan.Context('data', store.root))
    assert final.stat().st_mtime_ns == mtime  # not trained again
    B = Builder("spn", p.profile)
    B.plan.rows = list(p.rows)
    ev2 = EvalSpec(B.testset("sr_benchmark:B100-x4", "srx4", seed=7), channel="y", crop=4)
    B.measure("Table 8", "EDSR-light", "lambda=0", "B100", p.rows[0].source.runs, ev2, ("PSNR",))
    assert plan.pending(store, [key]) == []
    plan.submit_plans([B.plan], store, plan.Context("data", store.root))
    assert plan.pending(store, [key]) == [key]  # a new evaluation is pending, training is not
    plan.execute(B.plan, store, plan.Context('data', store.root))
    assert final.stat().st_mtime_ns == mtime and len(list((store.dir(key) / "evals").glob("*.json"))) == 2
    rows = gather(B.plan, store)
    assert rows.value.notna().all() and (rows.n_images == 3).all()


def test_half_written_and_failed_runs_are_not_done(tmp_path):
    p = tiny_plan(steps=4, extra_spn=False)
    store = RunStore(tmp_path / "runs")
    run = p.runs()[0]
    key = store.submit(run, [], plan.Context("data", store.root))
    torch.save({"model": {}}, store.dir(key) / "final.pt")  # a crash before done.json
    (store.dir(key) / "evals").mkdir()
    assert store.state(key) == "pending" and store.done(key) is None
    rows = gather(p, store)
    assert np.isnan(rows.value[0]) and "not finished" in rows.notes[0]
    bad = run.replace(net_kw=(("scale", 4), ("n_blocks", -1)))  # a network that cannot be built
    k2 = store.submit(bad, [], plan.Context("data", store.root))
    with pytest.raises(Exception):
        plan.run_job(store.root, k2)
    assert store.state(k2) == "failed" and "error" in json.loads((store.dir(k2) / "error.json").read_text())


def _final(store, key):
    return torch.load(store.dir(key) / "final.pt", weights_only=True)["model"]


def test_local_executor_kill_and_resume_equals_uninterrupted(tmp_path):
    p = tiny_plan(steps=60)
    # reference: the same two runs uninterrupted, inline
    ref = RunStore(tmp_path / "ref")
    plan.execute(p, ref, plan.Context('data', ref.root))
    store = RunStore(tmp_path / "runs")
    keys = [r.key() for r in p.runs()]
    events = []
    ex = plan.LocalExecutor(store, jobs=2, on_event=lambda *e: events.append(e))
    plan.submit_plans([p], store, plan.Context("data", store.root))
    import threading

    t = threading.Thread(target=ex.run, args=(keys,))
    t.start()
    victim = keys[1]  # the +SPN run: kill its worker once it has checkpointed
    deadline = time.time() + 300
    while time.time() < deadline:
        prog = store.progress(victim) or {}
        if (store.dir(victim) / "ckpt" / "last.pt").is_file() and prog.get("step", 0) >= 20:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the run never checkpointed")
    procs = [pr for pr in ex._procs if pr.poll() is None]
    assert len(ex._procs) == 2  # two worker processes, one per slot
    victim_proc = None
    for pr in procs:  # the worker whose lock file is the victim's
        fds = os.listdir(f"/proc/{pr.pid}/fd")
        if any(os.path.realpath(f"/proc/{pr.pid}/fd/{fd}") == str((store.dir(victim) / "lock").resolve()) for fd in fds):
            victim_proc = pr
    assert victim_proc is not None
    os.killpg(victim_proc.pid, signal.SIGKILL)
    t.join(300)
    started = {k: m for kind, k, m in events if kind == "start"}
    assert "slot 0" in started[keys[0]] and "slot 1" in started[keys[1]]
    assert any(kind == "failed" and k == victim and "SIGKILL" in m for kind, k, m in events)
    assert store.state(keys[0]) == "done"
    assert store.state(victim) == "partial"  # a checkpoint, no done record: never read as done
    assert np.isnan(gather(p, store).value[1])
    plan.execute(p, store, plan.Context("data", store.root), executor="local", jobs=2)  # re-submit: resumes from the checkpoint
    assert store.state(victim) == "done"
    log = (store.dir(victim) / "log.csv").read_text().splitlines()
    assert len(log) == 61  # header + 60 steps, none repeated
    for k in keys:
        a, b = _final(ref, k), _final(store, k)
        for name in a:
            torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-5)
    ra, rb = gather(p, ref), gather(p, store)
    np.testing.assert_allclose(ra.value, rb.value, rtol=1e-5)


@pytest.mark.skipif(shutil.which("sinfo") is None or subprocess.run(["sinfo"], capture_output=True).returncode != 0,
                    reason="no Slurm cluster (CI starts one with .ci/slurm.sh)")
def test_slurm_executor_trains_a_plan_through_real_array_jobs(tmp_path):
    from irlib.engine import slurm

    root = tmp_path / "runs"
    p = tiny_plan(steps=4)
    st = plan.execute(p, root, plan.Context("data", root), executor="slurm", device="cpu",
                      slurm={"cpus_per_run": 1, "mem_gb": 1, "time_min": 10, "poll_s": 1.0})
    assert list(st.state) == ["done", "done"]
    table = slurm.status(slurm.default_folder(root))
    assert len(table) == 2 and table.array_job_id.nunique() == 1  # one array job, two tasks
    assert gather(p, RunStore(root)).value.notna().all()


def test_several_training_sources_mix_round_robin_and_resume_identically(tmp_path):
    from irlib.data.splits import synth
    from irlib.engine import RunSpec, Source, Term
    from irlib.engine.runner import MixedBatches, training_batches

    synth(tmp_path, n=2, side=48, only=["reside_sots", "cbsd68"])
    spec = RunSpec("dinoir", "Restormer", (Source("reside_sots:indoor", "haze"), Source("cbsd68:test", "noise25")),
                   (Term("l1"),), Schedule(4, 2, 16, 1e-3), size="tiny", weights="random")
    b = training_batches(spec, str(tmp_path), spec.schedule)
    assert isinstance(b, MixedBatches)
    assert [b(s)["task"][0] for s in range(4)] == ["haze", "noise25", "haze", "noise25"]
    again = training_batches(spec, str(tmp_path), spec.schedule)
    torch.testing.assert_close(b(3)["lq"], again(3)["lq"])  # a pure function of (seed, step)
    noisy = b(1)
    assert not torch.equal(noisy["lq"], noisy["gt"])          # the clean source is degraded on the fly


def test_weighted_sources_follow_their_shares_deterministically():
    from irlib.engine.runner import MixedBatches

    picks = MixedBatches([lambda s, k=k: {"task": [k]} for k in range(3)], weights=[46_296, 40_000, 72_135], seed=3)
    seq = [picks(s)["task"][0] for s in range(6000)]
    shares = np.bincount(seq, minlength=3) / len(seq)
    np.testing.assert_allclose(shares, np.array([46_296, 40_000, 72_135]) / 158_431, atol=0.02)
    again = MixedBatches([lambda s, k=k: {"task": [k]} for k in range(3)], weights=[46_296, 40_000, 72_135], seed=3)
    assert [again(s)["task"][0] for s in range(200)] == seq[:200]   # resumable: a function of (seed, step)
    with pytest.raises(ValueError, match="one non-negative weight per source"):
        MixedBatches([lambda s: {}], weights=[1.0, 2.0])
