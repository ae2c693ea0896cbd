"""Executors: run a plan's missing jobs with an existing engine, never a home-made scheduler.

* ``inline`` — in this process, one after another (inside a notebook: today's behaviour);
* ``local``  — one worker process per slot (a visible GPU, or ``--jobs`` CPU slots): a
  :class:`concurrent.futures.ThreadPoolExecutor` feeds each slot's worker (``python -m irlib.plan.worker``) one
  job at a time over a pipe; a worker that dies fails only its current job, and the slot starts a fresh one;
* ``slurm``  — one Slurm array job per wave through ``submitit`` (:mod:`irlib.plan.slurm`), requeued on
  preemption; a single large run can still use DDP under ``torchrun`` (see :mod:`irlib.train`).

Jobs go in waves: runs without dependencies, runs that need other runs' weights, then studies. Finished jobs
are skipped (the run store's ``done.json``); interrupted ones resume from their checkpoints.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd

from .core import Plan
from .spec import RunSpec
from .store import RunStore, run_job

PROTOCOL = "@@irlib "


def submit_plans(plans: Sequence[Plan], store: RunStore, context: dict) -> list[list[str]]:
    """Write every job of ``plans`` into the store; returns the job keys in waves (runs without dependencies,
    runs with dependencies, studies)."""
    evals: dict[str, list] = {}
    runs: dict[str, RunSpec] = {}
    studies = {}
    for p in plans:
        for r in p.runs():
            runs.setdefault(r.key(), r)
        for k, evs in p.evals().items():
            evals.setdefault(k, [])
            evals[k] += [e for e in evs if e not in evals[k]]
        for s in p.studies():
            studies.setdefault(s.key(), s)
    waves: list[list[str]] = [[], [], []]
    for k, r in runs.items():
        store.submit(r, evals.get(k, []), context)
        waves[1 if r.deps() else 0].append(k)
    for k, s in studies.items():
        store.submit(s, [], context)
        waves[2].append(k)
    return [w for w in waves if w]


def pending(store: RunStore, keys: Sequence[str]) -> list[str]:
    """Keys that still need work: not done, or done but missing an evaluation the job asks for."""
    out = []
    for k in keys:
        if store.state(k) != "done":
            out.append(k)
            continue
        job = store.job(k)
        if job["kind"] == "run" and any(store.eval_result(k, e) is None for e in job["eval_objs"]):
            out.append(k)
    return out


def execute(plans: Plan | Sequence[Plan], store: RunStore | str | Path, *, executor: str = "inline", device: str = "cpu",
            data_root: str | Path = "data", files: dict | None = None, jobs: int = 1, slurm: dict | None = None,
            on_event: Callable[[str, str, str], None] | None = None) -> pd.DataFrame:
    """Run every job ``plans`` need that the store does not hold yet. Returns a table (key, label, state, error).

    ``on_event(kind, key, message)`` is told when a job starts (``start``), ends (``ok``/``failed``)."""
    plans = [plans] if isinstance(plans, Plan) else list(plans)
    store = store if isinstance(store, RunStore) else RunStore(store)
    context = {"data_root": str(Path(data_root).resolve()), "files": dict(files or {}), "store": str(store.root.resolve())}
    waves = submit_plans(plans, store, context)
    on_event = on_event or (lambda *a: None)
    for wave in waves:
        todo = pending(store, wave)
        if not todo:
            continue
        if executor == "inline":
            _inline(store, todo, device, on_event)
        elif executor == "local":
            LocalExecutor(store, device=device, jobs=jobs, on_event=on_event).run(todo)
        elif executor == "slurm":
            from . import slurm as sl

            sl_kw = {k: v for k, v in dict(slurm or {}).items() if v is not None}
            poll = float(sl_kw.pop("poll_s", 10.0))
            if not device.startswith("cuda"):
                sl_kw["gpus_per_run"] = 0
            for k in todo:
                on_event("start", k, "submitted to Slurm")
            sl.submit(str(store.root), todo, device=device, **sl_kw)
            sl.wait(store.root, todo, poll_s=poll, on_event=on_event)
        else:
            raise ValueError(f"executor must be inline, local or slurm; got {executor!r}")
    return summary(store, [k for w in waves for k in w])


def summary(store: RunStore, keys: Sequence[str]) -> pd.DataFrame:
    rows = []
    for k in keys:
        job = store.job(k)
        err = store.dir(k) / "error.json"
        rows.append({"key": k, "label": job.get("label", ""), "kind": job["kind"], "state": store.state(k),
                     "error": (pd.read_json(err, typ="series")["error"] if err.is_file() and store.state(k) != "done" else "")})
    return pd.DataFrame(rows, columns=["key", "label", "kind", "state", "error"])


def _inline(store: RunStore, keys: Sequence[str], device: str, on_event) -> None:
    for i, k in enumerate(keys, 1):
        on_event("start", k, f"run {i} of {len(keys)}")
        try:
            run_job(store.root, k, device)
            on_event("ok", k, "")
        except KeyboardInterrupt:
            raise
        except Exception as e:  # recorded in error.json; the next jobs still run
            on_event("failed", k, f"{type(e).__name__}: {e}")


def visible_gpus() -> list[str]:
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g for g in env.split(",") if g.strip() not in ("", "-1")]
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20)
        return [ln.strip() for ln in out.stdout.splitlines() if ln.strip()]
    except (OSError, subprocess.SubprocessError):
        return []


class LocalExecutor:
    """One worker process per slot. ``device="cuda"``: a slot per visible GPU (``CUDA_VISIBLE_DEVICES`` set
    to that GPU in the worker); otherwise ``jobs`` CPU slots sharing the cores."""

    def __init__(self, store: RunStore, device: str = "cpu", jobs: int = 1, on_event=None):
        self.store, self.device = store, device
        gpus = visible_gpus() if device.startswith("cuda") else []
        if device.startswith("cuda") and not gpus:
            raise RuntimeError("--executor local --device cuda: no GPU is visible (CUDA_VISIBLE_DEVICES / nvidia-smi)")
        self.slots = [{"CUDA_VISIBLE_DEVICES": g} for g in gpus] or [{} for _ in range(max(1, jobs))]
        self.on_event = on_event or (lambda *a: None)
        self._procs: list[subprocess.Popen] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def _spawn(self, slot: int) -> subprocess.Popen:
        env = dict(os.environ, **self.slots[slot])
        if not self.device.startswith("cuda"):
            threads = max(1, (os.cpu_count() or 1) // len(self.slots))
            env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        logs = self.store.root / "_logs"
        logs.mkdir(parents=True, exist_ok=True)
        log = open(logs / f"worker-{slot}.log", "a")
        dev = "cuda:0" if self.device.startswith("cuda") else self.device
        p = subprocess.Popen([sys.executable, "-m", "irlib.plan.worker", str(self.store.root), dev],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, bufsize=1,
                             env=env, start_new_session=True)
        log.close()
        with self._lock:
            self._procs.append(p)
        return p

    def run(self, keys: Sequence[str]) -> None:
        queue = list(keys)
        total = len(queue)
        counter = {"n": 0}

        def next_key() -> tuple[str, int] | None:
            with self._lock:
                if self._stop.is_set() or not queue:
                    return None
                counter["n"] += 1
                return queue.pop(0), counter["n"]

        def slot_loop(slot: int) -> None:
            proc = None
            while (item := next_key()) is not None:
                key, index = item
                if proc is None or proc.poll() is not None:
                    proc = self._spawn(slot)
                self.on_event("start", key, f"run {index} of {total} (slot {slot})")
                try:
                    proc.stdin.write(key + "\n")
                    proc.stdin.flush()
                    reply = ""
                    while not reply.startswith(PROTOCOL):
                        reply = proc.stdout.readline()
                        if reply == "":
                            break
                except (BrokenPipeError, OSError):
                    reply = ""
                if reply == "":
                    code = proc.wait()
                    self.on_event("failed", key, f"worker died ({_describe(code)}); the run resumes from its checkpoint next time")
                    proc = None
                    continue
                status, _, msg = reply[len(PROTOCOL):].strip().partition(" ")
                self.on_event("ok" if status == "ok" else "failed", key, msg.partition(" ")[2])
            if proc is not None and proc.poll() is None:
                proc.stdin.close()
                proc.wait()

        try:
            with ThreadPoolExecutor(max_workers=len(self.slots)) as ex:
                futures = [ex.submit(slot_loop, i) for i in range(len(self.slots))]
                while not all(f.done() for f in futures):
                    time.sleep(0.2)
                for f in futures:
                    f.result()
        except KeyboardInterrupt:
            self.terminate()
            raise

    def terminate(self, grace: float = 10.0) -> None:
        """Ask every worker to stop (SIGTERM: it checkpoints and exits), kill what is left after ``grace``."""
        self._stop.set()
        with self._lock:
            procs = list(self._procs)
        for p in procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.time() + grace
        for p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)


def _describe(code: int | None) -> str:
    if code is None:
        return "unknown exit"
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"
