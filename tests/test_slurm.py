"""irlib.engine.slurm: one array job per submission, requeue through Checkpointable, status and cancel.

On a real Slurm cluster when ``sinfo`` shows a usable node (CI starts a one-node cluster with
``.ci/slurm.sh``); the same submit path always runs through submitit's local executor too.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import cloudpickle
import pandas as pd
import pytest

from irlib.engine import slurm

# The job functions below travel to the compute node by value: this test module is not importable there.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _cluster_state() -> str | None:
    """None when a Slurm node can take jobs, else why the real-cluster tests are skipped."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return "no Slurm client here (CI runs `bash .ci/slurm.sh` first to start a one-node cluster)"
    try:
        res = subprocess.run(["sinfo", "--noheader", "--format=%T"], capture_output=True, text=True, timeout=20,
                             check=False)
    except subprocess.TimeoutExpired:
        return "sinfo did not answer in 20 s (slurmctld down?)"
    if res.returncode != 0:
        return f"sinfo failed (slurmctld not running?): {res.stderr.strip()}"
    states = set(res.stdout.split())
    if not states & {"idle", "mixed", "allocated", "completing"}:
        return f"no Slurm node can take jobs (sinfo states: {sorted(states) or 'none'})"
    return None


NO_SLURM = _cluster_state()
needs_slurm = pytest.mark.skipif(NO_SLURM is not None, reason=f"real Slurm cluster: {NO_SLURM}")
SMALL: dict[str, Any] = {"gpus_per_run": 0, "cpus_per_run": 1, "mem_gb": 0.25, "time_min": 10, "device": "cpu"}


# ------------------------------------------------------------------ job functions (run on the node)
def write_output(store_root: str, key: str, device: str) -> dict[str, Any]:
    """A stand-in for run_job: writes <store>/<key>/out.json saying where it ran."""
    out = {"key": key, "device": device, "pid": os.getpid(),
           "array_job_id": os.environ.get("SLURM_ARRAY_JOB_ID"),
           "array_task_id": os.environ.get("SLURM_ARRAY_TASK_ID")}
    d = Path(store_root) / key
    d.mkdir(parents=True, exist_ok=True)
    (d / "out.json").write_text(json.dumps(out))
    return out


def preempted_once(store_root: str, key: str, device: str) -> dict[str, Any]:
    """First attempt: records its state and waits to be interrupted. Next attempt: resumes from that state."""
    d = Path(store_root) / key
    d.mkdir(parents=True, exist_ok=True)
    state = d / "state.json"
    env = {"pid": os.getpid(), "restarts": os.environ.get("SLURM_RESTART_COUNT"),
           "local_job": os.environ.get("SUBMITIT_LOCAL_JOB_ID"), "slurm_job": os.environ.get("SLURM_JOB_ID")}
    if not state.exists():
        tmp = d / "state.tmp"
        tmp.write_text(json.dumps({"attempt": 1, **env}))
        tmp.replace(state)
        time.sleep(120)
        raise RuntimeError("first attempt was not interrupted")
    first = json.loads(state.read_text())
    resumed = {"attempt": first["attempt"] + 1, "first": first, **env}
    (d / "resumed.json").write_text(json.dumps(resumed))
    return resumed


def fail(store_root: str, key: str, device: str) -> None:
    raise RuntimeError(f"run {key} cannot train")


def sleep_long(store_root: str, key: str, device: str) -> None:
    (Path(store_root) / f"{key}.started").touch()
    time.sleep(300)


# ------------------------------------------------------------------ helpers
def _wait_until(cond, timeout_s: float, what: str, folder: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.5)
    logs = "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted(folder.glob("*_log.*")))
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}\n{slurm.status(folder)}\n{logs}")


def _wait_final(folder: Path, n: int, timeout_s: float = 60) -> pd.DataFrame:
    def finished() -> bool:
        table = slurm.status(folder)
        return len(table) == n and table["state"].isin(slurm.TERMINAL).all()

    _wait_until(finished, timeout_s, f"{n} tasks to finish", folder)
    return slurm.status(folder)


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    # pytest's tmp_path lies under /tmp, which the local slurmd (root) can write.
    store, folder = tmp_path / "runs", tmp_path / "slurm"
    store.mkdir()
    return store, folder


# ------------------------------------------------------------------ checks without a cluster
def test_submit_checks_its_arguments(dirs: tuple[Path, Path]) -> None:
    store, folder = dirs
    with pytest.raises(ValueError, match="no run keys"):
        slurm.submit(store, [], folder=folder, cluster="local")
    with pytest.raises(ValueError, match=r"more than once: \['a'\]"):
        slurm.submit(store, ["a", "b", "a"], folder=folder, cluster="local", job_fn=write_output)
    with pytest.raises(ValueError, match="cluster must be one of"):
        slurm.submit(store, ["a"], folder=folder, cluster="pbs", job_fn=write_output)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        slurm.submit(store / "nope", ["a"], folder=folder, cluster="local", job_fn=write_output)
    # the default job (the run store's run_job) needs each run's spec before anything is queued
    (store / "a").mkdir()
    (store / "a" / "job.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"no job.json .* for runs \['b'\]"):
        slurm.submit(store, ["a", "b"], folder=folder, cluster="local")
    assert slurm.status(folder).empty  # nothing was recorded
    assert slurm.default_folder(store) == store.resolve().parent / "slurm"


def test_local_submit_runs_every_key_and_records_it(dirs: tuple[Path, Path]) -> None:
    store, folder = dirs
    jobs = slurm.submit(store, ["run-a", "run-b"], folder=folder, cluster="local", job_fn=write_output, **SMALL)
    assert len(jobs) == 2
    results = [j.result() for j in jobs]  # submitit's own wait, through the result pickles
    assert [r["key"] for r in results] == ["run-a", "run-b"]
    for key in ("run-a", "run-b"):
        out = json.loads((store / key / "out.json").read_text())
        assert (out["key"], out["device"]) == (key, "cpu")
        assert out["pid"] != os.getpid()  # ran in a separate process
    # the record is readable from another process and status agrees with the outputs
    code = f"from irlib.engine import slurm; print(slurm.status({str(folder)!r}).to_json(orient='records'))"
    rows = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                     check=True).stdout)
    assert [(r["key"], r["state"], r["source"], r["cluster"]) for r in rows] == [
        ("run-a", "COMPLETED", "result", "local"), ("run-b", "COMPLETED", "result", "local")]
    assert [r["job_id"] for r in rows] == [j.job_id for j in jobs]
    # a second submission is appended, not overwritten
    slurm.submit(store, ["run-c"], folder=folder, cluster="local", job_fn=write_output, **SMALL)[0].result()
    assert [s["tasks"][0]["key"] for s in slurm.read_submitted(folder)] == ["run-a", "run-c"]
    assert not list(folder.glob("submitted.json.*.tmp"))


def test_local_failure_is_reported_as_failed(dirs: tuple[Path, Path]) -> None:
    store, folder = dirs
    job = slurm.submit(store, ["bad"], folder=folder, cluster="local", job_fn=fail, **SMALL)[0]
    with pytest.raises(Exception, match="run bad cannot train"):
        job.result()
    assert slurm.status(folder)["state"].tolist() == ["FAILED"]


def test_local_checkpointable_requeues_and_resumes(dirs: tuple[Path, Path]) -> None:
    store, folder = dirs
    job = slurm.submit(store, ["pre"], folder=folder, cluster="local", job_fn=preempted_once, **SMALL)[0]
    state = store / "pre" / "state.json"
    _wait_until(state.exists, 30, "the first attempt to start", folder)
    first = json.loads(state.read_text())
    os.kill(first["pid"], signal.SIGUSR2)  # what Slurm sends before the time limit / on preemption
    resumed = job.result()
    assert resumed["attempt"] == 2 and resumed["first"]["attempt"] == 1
    assert resumed["pid"] != first["pid"]  # a new process ...
    assert resumed["local_job"] == first["local_job"] == job.job_id  # ... of the same job, requeued
    log = job.stdout() or ""
    assert "requeueing it to resume from its checkpoint" in log  # RunJob.checkpoint was called
    assert "Requeued job" in log
    assert slurm.status(folder)["state"].tolist() == ["COMPLETED"]


def test_local_cancel_stops_running_tasks(dirs: tuple[Path, Path]) -> None:
    store, folder = dirs
    jobs = slurm.submit(store, ["s1", "s2"], folder=folder, cluster="local", job_fn=sleep_long, **SMALL)
    _wait_until(lambda: (store / "s1.started").exists() and (store / "s2.started").exists(), 30,
                "both sleepers to start", folder)
    assert slurm.status(folder)["state"].tolist() == ["RUNNING", "RUNNING"]
    with pytest.raises(KeyError, match="nope"):
        slurm.cancel(folder, keys=["nope"])
    assert slurm.cancel(folder, keys=["s2"]) == [jobs[1].job_id]
    _wait_until(lambda: jobs[1].done(), 30, "s2 to stop", folder)
    assert not jobs[0].done()
    assert slurm.cancel(folder) == [jobs[0].job_id]
    _wait_until(lambda: jobs[0].done(), 30, "s1 to stop", folder)


# ------------------------------------------------------------------ real Slurm
@needs_slurm
def test_slurm_array_is_one_job_with_one_task_per_key(dirs: tuple[Path, Path]) -> None:
    store, folder = dirs
    jobs = slurm.submit(store, ["run-a", "run-b"], folder=folder, job_fn=write_output, **SMALL)
    array_ids = {j.job_id.split("_")[0] for j in jobs}
    assert len(array_ids) == 1, [j.job_id for j in jobs]
    (array,) = array_ids
    assert [j.job_id for j in jobs] == [f"{array}_0", f"{array}_1"]
    table = _wait_final(folder, 2)
    assert table["state"].tolist() == ["COMPLETED", "COMPLETED"]
    assert set(table["source"]) <= {"squeue", "sacct"}  # Slurm itself, not submitit's files
    for task, key in enumerate(["run-a", "run-b"]):
        out = json.loads((store / key / "out.json").read_text())
        assert (out["array_job_id"], out["array_task_id"], out["device"]) == (array, str(task), "cpu")
    assert [j.result()["key"] for j in jobs] == ["run-a", "run-b"]
    (sub,) = slurm.read_submitted(folder)
    assert sub["array_job_id"] == array and sub["cluster"] == "slurm"
    # the batch script is one array with the per-run resources
    script = next(folder.glob(f"{array}_submission.sh")).read_text()
    assert "#SBATCH --array=0-1%2" in script and "#SBATCH --requeue" in script
    assert "#SBATCH --cpus-per-task=1" in script and "#SBATCH --time=10" in script


@needs_slurm
def test_slurm_interrupted_task_is_requeued_and_resumes(dirs: tuple[Path, Path]) -> None:
    store, folder = dirs
    (job,) = slurm.submit(store, ["pre"], folder=folder, job_fn=preempted_once, **SMALL)
    state = store / "pre" / "state.json"
    _wait_until(state.exists, 30, "the first attempt to start", folder)
    job._interrupt()  # scancel --signal TERM, then USR2: what Slurm does on preemption
    table = _wait_final(folder, 1, timeout_s=60)
    assert table["state"].tolist() == ["COMPLETED"]
    resumed = json.loads((store / "pre" / "resumed.json").read_text())
    first = resumed["first"]
    assert (first["attempt"], resumed["attempt"]) == (1, 2)
    assert resumed["slurm_job"] == first["slurm_job"]  # the same Slurm job ...
    assert (first["restarts"], resumed["restarts"]) == (None, "1")  # ... restarted once by the requeue
    log = job.stdout() or ""
    assert "requeueing it to resume from its checkpoint" in log and "Requeued job" in log
    assert job.result()["attempt"] == 2


@needs_slurm
def test_slurm_cancel(dirs: tuple[Path, Path]) -> None:
    store, folder = dirs
    jobs = slurm.submit(store, ["s1", "s2"], folder=folder, job_fn=sleep_long, **SMALL)
    _wait_until(lambda: set(slurm.status(folder)["state"]) <= {"PENDING", "RUNNING"}
                and (store / "s1.started").exists(), 30, "the sleepers to be queued", folder)
    assert sorted(slurm.cancel(folder)) == sorted(j.job_id for j in jobs)
    table = _wait_final(folder, 2, timeout_s=30)
    assert table["state"].tolist() == ["CANCELLED", "CANCELLED"]
    assert slurm.cancel(folder) == []  # nothing left to cancel
