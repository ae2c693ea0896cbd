"""Run the plan's training runs on a Slurm cluster through submitit: one array job per submission.

How a lab uses it (the runs already have their specs under ``<out>/runs/<key>/``)::

    from irlib.engine import slurm
    jobs = slurm.submit("out/runs", keys, partition="gpu", gpus_per_run=1, cpus_per_run=8,
                        mem_gb=32, time_min=12 * 60, array_parallelism=16,
                        setup=["source /path/to/irlib/.venv/bin/activate"])
    slurm.status("out/slurm")     # one row per run: array task id, key, Slurm state
    slurm.cancel("out/slurm")     # scancel whatever is still pending or running

* One ``submit`` call is one Slurm job array (``sbatch --array=0-N%P``); each array task trains one run by
  calling ``irlib.engine.jobs.run_job(store_root, key, device)``. ``array_parallelism`` caps how many tasks
  run at the same time; ``gpus_per_run`` / ``cpus_per_run`` / ``mem_gb`` / ``time_min`` are per task.
* Time limit and requeue: Slurm sends SIGUSR2 ``signal_delay_s`` seconds before the time limit; submitit
  catches it, calls :meth:`RunJob.checkpoint`, which hands back the same run, and ``scontrol requeue``\\ s the
  task (at most ``max_timeouts`` times). A preempted task (``PreemptMode=REQUEUE``) or one requeued by hand
  goes back to the queue the same way. Either way the rerun calls ``run_job`` again, which resumes from the
  run's checkpoint in the store and only evaluates what is missing — so the time limit may be shorter than a
  run; progress since the run's last checkpoint is redone.
* The ``folder`` (default ``<store_root>/../slurm``) holds submitit's pickles and logs
  (``<job>_<task>_log.out/err``) and ``submitted.json``, the record of every submission that
  :func:`status` and :func:`cancel` read (from any process, e.g. ``irlib status``). Like the store, it must
  be on a file system that the compute nodes share with the submitting machine.
* Without Slurm, ``cluster="local"`` runs the same tasks as local processes (submitit's LocalExecutor; no
  array, one process per run) and ``cluster="debug"`` runs them in this process when their result is asked.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import pickle
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import submitit
from filelock import FileLock
from submitit.core.utils import JobPaths, pickle_load

from ..io import atomic_write_json

JobFn = Callable[[str, str, str], Any]
SUBMITTED = "submitted.json"
CLUSTERS = ("slurm", "local", "debug")
# Slurm states after which a task will not run again (first word of squeue/sacct's state). PREEMPTED is not
# one: with PreemptMode=REQUEUE the task goes back to the queue.
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL",
            "DEADLINE", "REVOKED"}


def _store_run_job(store_root: str, key: str, device: str) -> Any:
    """The default job: the run store's idempotent, resumable ``run_job`` (imported on the compute node)."""
    from irlib.engine.jobs import run_job

    return run_job(store_root, key, device=device)


class RunJob(submitit.helpers.Checkpointable):
    """One array task: ``job_fn(store_root, key, device)``; requeued as itself on timeout or preemption.

    ``job_fn`` must be resumable (calling it again after a kill continues the run); the default is
    ``irlib.engine.jobs.run_job``. It is pickled with the task, so it must be importable or picklable by
    cloudpickle on the compute node.
    """

    def __init__(self, job_fn: JobFn | None = None) -> None:
        self.job_fn = job_fn

    def __call__(self, store_root: str, key: str, device: str) -> Any:
        restarts = os.environ.get("SLURM_RESTART_COUNT")  # set by Slurm once a task has been requeued
        again = f", requeued {restarts} time(s)" if restarts else ""
        print(f"irlib: run {key!r} on {device} (store {store_root}{again})", flush=True)
        fn = self.job_fn if self.job_fn is not None else _store_run_job
        return fn(store_root, key, device)

    def checkpoint(self, store_root: str, key: str, device: str) -> submitit.helpers.DelayedSubmission:
        """Called by submitit on SIGUSR2 (time limit or preemption): requeue this same run unchanged.

        Nothing is saved here: the job function resumes from the run store's own checkpoint.
        """
        print(f"irlib: run {key!r} interrupted; requeueing it to resume from its checkpoint", flush=True)
        return submitit.helpers.DelayedSubmission(self, store_root, key, device)


def default_folder(store_root: str | os.PathLike[str]) -> Path:
    """Where :func:`submit` puts submitit's files when no folder is given: ``<store_root>/../slurm``."""
    return Path(store_root).resolve().parent / "slurm"


def submit(
    store_root: str | os.PathLike[str],
    keys: Sequence[str],
    *,
    folder: str | os.PathLike[str] | None = None,
    partition: str | None = None,
    gpus_per_run: int = 1,
    cpus_per_run: int = 8,
    mem_gb: float = 32,
    time_min: int = 24 * 60,
    array_parallelism: int | None = None,
    max_timeouts: int = 3,
    signal_delay_s: int = 120,
    setup: Sequence[str] | None = None,
    name: str = "irlib",
    device: str = "cuda",
    job_fn: JobFn | None = None,
    cluster: str = "slurm",
    executor_params: dict[str, Any] | None = None,
) -> list[submitit.Job]:
    """Submit one run per key as ONE Slurm job array; returns submitit's jobs (one per key, in order).

    store_root: the run store (``<out>/runs``); each key is ``<store_root>/<key>/``.
    partition: Slurm partition (None: the cluster's default). gpus_per_run, cpus_per_run, mem_gb,
    time_min: per array task (``--gpus-per-node``, ``--cpus-per-task``, ``--mem``, ``--time``).
    array_parallelism: most tasks running at once (None: submitit's default, 256).
    max_timeouts: how often a task that hits its time limit is requeued (preemptions are not counted).
    signal_delay_s: how long before the time limit Slurm sends SIGUSR2 (the requeue signal).
    setup: shell lines run in the batch script before the task (``module load ...``, activate a venv).
    device: passed to the job function (``"cuda"``: the GPU Slurm gives the task).
    job_fn: ``(store_root, key, device) -> Any``, resumable; default ``irlib.engine.jobs.run_job``.
    cluster: ``"slurm"``; ``"local"`` or ``"debug"`` run the same tasks without Slurm (tests, laptops).
    executor_params: more ``AutoExecutor.update_parameters`` arguments, e.g.
        ``{"slurm_account": "lab", "slurm_qos": "high", "slurm_constraint": "a100"}``.
    """
    keys = list(keys)
    if not keys:
        raise ValueError("submit: no run keys given")
    if any(not isinstance(k, str) or not k for k in keys):
        raise ValueError(f"submit: run keys must be non-empty strings, got {keys!r}")
    dupes = sorted({k for k in keys if keys.count(k) > 1})
    if dupes:
        raise ValueError(f"submit: run keys given more than once: {dupes}")
    if cluster not in CLUSTERS:
        raise ValueError(f"submit: cluster must be one of {CLUSTERS}, got {cluster!r}")
    root = Path(store_root).resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"submit: run store {root} does not exist")
    if job_fn is None:
        missing = [k for k in keys if not (root / k / "job.json").is_file()]
        if missing:
            raise FileNotFoundError(f"submit: no job.json in {root} for runs {missing[:5]}"
                                    + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
    out = Path(folder).resolve() if folder is not None else default_folder(root)
    out.mkdir(parents=True, exist_ok=True)

    executor = submitit.AutoExecutor(folder=out, cluster=cluster, slurm_max_num_timeout=max_timeouts,
                                     local_max_num_timeout=max_timeouts)
    params: dict[str, Any] = {
        "name": name, "timeout_min": int(time_min), "nodes": 1, "tasks_per_node": 1,
        "cpus_per_task": int(cpus_per_run), "gpus_per_node": int(gpus_per_run) or None, "mem_gb": mem_gb,
        "slurm_partition": partition, "slurm_array_parallelism": array_parallelism,
        "slurm_signal_delay_s": int(signal_delay_s), "slurm_setup": list(setup) if setup else None,
        # --requeue: allowed to go back to the queue even where the cluster's JobRequeue default is 0
        "slurm_additional_parameters": {"requeue": True},
    }
    params.update(executor_params or {})
    executor.update_parameters(**params)
    task = RunJob(job_fn)
    n = len(keys)
    jobs = executor.map_array(task, [str(root)] * n, keys, [device] * n)
    _record(out, cluster, root, device, keys, jobs)
    return jobs


def _locked(folder: Path) -> FileLock:
    """Serialise read-modify-write of ``submitted.json`` between processes."""
    return FileLock(folder / (SUBMITTED + ".lock"), is_singleton=False)


def read_submitted(folder: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The submissions recorded in ``<folder>/submitted.json`` (oldest first; [] when there are none)."""
    path = Path(folder) / SUBMITTED
    if not path.exists():
        return []
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or not isinstance(data.get("submissions"), list):
        raise TypeError(f"{path} is not a submission record (no 'submissions' list)")
    return data["submissions"]


def _record(folder: Path, cluster: str, root: Path, device: str, keys: list[str],
            jobs: list[submitit.Job]) -> None:
    ids = [j.job_id for j in jobs]
    array = ids[0].split("_")[0] if cluster == "slurm" and "_" in ids[0] else None
    entry = {
        "array_job_id": array, "cluster": cluster, "store_root": str(root), "device": device,
        "submitted_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "tasks": [{"job_id": i, "key": k} for i, k in zip(ids, keys)],
    }
    with _locked(folder):
        subs = read_submitted(folder)
        subs.append(entry)
        atomic_write_json(folder / SUBMITTED, {"version": 1, "submissions": subs})


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str] | None:
    """Run a Slurm client command; None when it is not installed."""
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    except FileNotFoundError:
        return None


def _slurm_states(job_ids: list[str]) -> dict[str, tuple[str, str]]:
    """{task id: (state, source)} from squeue (jobs the controller still holds), then sacct (accounting)."""
    found: dict[str, tuple[str, str]] = {}
    if not job_ids:
        return found
    arrays = sorted({i.split("_")[0] for i in job_ids})
    queries = (
        ("squeue", ["squeue", "--states=all", "--array", "--noheader", "--format=%i|%T", f"--jobs={','.join(arrays)}"]),
        ("sacct", ["sacct", "--noheader", "--parsable2", "--allocations", "--format=JobID,State",
                   f"--jobs={','.join(arrays)}"]),
    )
    for source, cmd in queries:
        if all(i in found for i in job_ids):
            break
        res = _run(cmd)
        if res is None or res.returncode != 0:
            continue  # not installed, accounting disabled, or every id already purged
        for line in res.stdout.splitlines():
            jid, _, state = line.strip().partition("|")
            if jid in job_ids and jid not in found and state:
                found[jid] = (state.split()[0].rstrip("+"), source)
    return found


def _result_state(folder: Path, job_id: str) -> str | None:
    """COMPLETED/FAILED from submitit's result pickle of task 0, None when it has not written one."""
    path = JobPaths(folder, job_id=job_id, task_id=0).result_pickle
    if not path.exists():
        return None
    try:
        outcome = pickle_load(path)[0]
    except (OSError, EOFError, ValueError, ImportError, AttributeError, pickle.UnpicklingError):
        # half-written, or its value needs a module this process lacks: the file says nothing here
        return None
    return "COMPLETED" if outcome == "success" else "FAILED"


def _pid_alive(job_id: str) -> bool:
    try:
        os.kill(int(job_id), 0)
    except (ValueError, ProcessLookupError, PermissionError):
        return False
    return True


def status(folder: str | os.PathLike[str]) -> pd.DataFrame:
    """One row per submitted run: job_id, array_job_id, key, cluster, state, source, submitted_at,
    store_root, log.

    ``state`` is Slurm's (squeue while the controller holds the job, else sacct where accounting is on);
    when neither knows the task, submitit's result file gives COMPLETED/FAILED; else UNKNOWN. ``source``
    says which answered. For ``cluster="local"`` jobs the state is RUNNING while the process lives.
    """
    folder = Path(folder)
    subs = read_submitted(folder)
    rows: list[dict[str, Any]] = []
    slurm_ids = [t["job_id"] for s in subs if s["cluster"] == "slurm" for t in s["tasks"]]
    sched = _slurm_states(slurm_ids)
    for s in subs:
        for t in s["tasks"]:
            jid = t["job_id"]
            state, source = sched.get(jid, (None, None))
            if state is None:
                state = _result_state(folder, jid)
                source = "result" if state else None
            if state is None and s["cluster"] == "local" and _pid_alive(jid):
                state, source = "RUNNING", "process"
            rows.append({
                "job_id": jid, "array_job_id": s.get("array_job_id"), "key": t["key"], "cluster": s["cluster"],
                "state": state or "UNKNOWN", "source": source or "none", "submitted_at": s["submitted_at"],
                "store_root": s["store_root"], "log": str(JobPaths(folder, job_id=jid, task_id=0).stdout),
            })
    cols = ["job_id", "array_job_id", "key", "cluster", "state", "source", "submitted_at", "store_root", "log"]
    return pd.DataFrame(rows, columns=cols)


def wait(store_root: str | os.PathLike[str], keys: Sequence[str], *, folder: str | os.PathLike[str] | None = None,
         poll_s: float = 10.0, on_event: Callable[[str, str, str], None] | None = None) -> dict[str, str]:
    """Block until every run in ``keys`` is finished in the run store or its task has ended without finishing
    (failed, cancelled, out of requeues). The run store's ``done.json`` is the truth; Slurm's state (via
    :func:`status`) only tells when to stop waiting for a run that will not finish. Returns key -> outcome
    (``done`` or the Slurm state / the store's error)."""
    from .store import RunStore

    store = RunStore(store_root)
    folder = Path(folder) if folder is not None else default_folder(store_root)
    on_event = on_event or (lambda *a: None)
    left, outcome = set(keys), {}
    while left:
        table = status(folder)
        latest = {r.key: r.state for r in table.itertuples()}  # later submissions of a key come last
        for k in sorted(left):
            st = store.state(k)
            if st == "done":
                outcome[k] = "done"
            elif latest.get(k) in TERMINAL or st == "failed":
                outcome[k] = store.error(k) or f"Slurm {latest.get(k)}"
            else:
                continue
            left.discard(k)
            on_event("ok" if outcome[k] == "done" else "failed", k, "" if outcome[k] == "done" else outcome[k])
        if left:
            time.sleep(poll_s)
    return outcome


def cancel(folder: str | os.PathLike[str], keys: Sequence[str] | None = None) -> list[str]:
    """Cancel the recorded runs (all, or those with the given keys) that are not finished yet.

    Slurm tasks are cancelled with one ``scancel``; local ones get SIGINT (submitit's local cancel).
    Returns the job ids it cancelled.
    """
    table = status(folder)
    if keys is not None:
        unknown = sorted(set(keys) - set(table["key"]))
        if unknown:
            raise KeyError(f"cancel: no submitted run with key(s) {unknown} in {Path(folder) / SUBMITTED}")
        table = table[table["key"].isin(list(keys))]
    live = table[~table["state"].isin(TERMINAL)]
    slurm_ids = live.loc[live["cluster"] == "slurm", "job_id"].tolist()
    done: list[str] = []
    if slurm_ids:
        res = _run(["scancel", *slurm_ids])
        if res is None:
            raise RuntimeError("cancel: scancel not found; is this a Slurm login node?")
        if res.returncode != 0 and "already completing or completed" not in res.stderr:
            raise RuntimeError(f"cancel: scancel {' '.join(slurm_ids)} failed: {res.stderr.strip()}")
        done += slurm_ids
    for jid in live.loc[live["cluster"] == "local", "job_id"]:
        if _pid_alive(jid):
            os.kill(int(jid), signal.SIGINT)
            done.append(jid)
    return done
