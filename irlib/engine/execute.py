"""Executors: run a plan's missing jobs. One interface, :class:`Executor` (``submit`` / ``wait`` /
``terminate``), owned by :func:`execute`; ``irlib reproduce`` builds one with :func:`make_executor` and keeps
the handle only to terminate it on a signal.

* ``inline`` — in this process, one after another (inside a notebook: today's behaviour);
* ``local``  — one long-lived worker process per slot (a visible GPU, or ``--jobs`` CPU slots): a
  :class:`concurrent.futures.ThreadPoolExecutor` feeds each slot's worker (``python -m irlib.engine.worker``) one
  job at a time over a pipe; a worker that dies fails only its current job, and the slot starts a fresh one.
  Kept instead of submitit's ``LocalExecutor`` because that starts a new interpreter per job, and every job
  then pays the torch/timm import and the feature networks' construction again (measured: see the README);
* ``slurm``  — one Slurm array job per wave through ``submitit`` (:mod:`irlib.engine.slurm`), requeued on
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
from typing import Callable, Mapping, Protocol, Sequence

import pandas as pd

from ..procs import die_with_parent, stop_process_groups
from .context import Context
from .core import Plan
from .spec import RunSpec
from .store import RunStore

EXECUTORS = ("inline", "local", "slurm")
OnEvent = Callable[[str, str, str], None]

PROTOCOL = "@@irlib "


def submit_plans(plans: Sequence[Plan], store: RunStore, context: Context,
                 accum: Mapping[str, int] | None = None) -> list[list[str]]:
    """Write every job of ``plans`` into the store; returns the job keys in waves (runs without dependencies,
    runs with dependencies, studies). ``accum``: run key -> gradient-accumulation factor to record in each run's
    job (1 for a run it does not name; ``irlib reproduce --gpu``); None keeps what the jobs recorded (1 when new)."""
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
    prints: dict[str, dict | None] = {}
    for k, r in runs.items():
        store.submit(r, evals.get(k, []), context, data_used(r, evals.get(k, []), context.data_root, prints),
                     accum=None if accum is None else int(accum.get(k, 1)))
        waves[1 if r.deps() else 0].append(k)
    for k, s in studies.items():
        store.submit(s, [], context, data_used(s, [], context.data_root, prints))
        waves[2].append(k)
    return [w for w in waves if w]


def data_used(spec, evals: Sequence, data_root, cache: dict) -> dict[str, dict | None]:
    """Data reference -> fingerprint (:func:`irlib.data.splits.fingerprint`; None when it cannot be read now)
    of what job ``spec`` itself reads (training sources, selection and evaluation test sets, a study's data
    arguments; not its dependencies'). ``offline`` (the packaged photos) is left out. ``cache``: per call."""
    from ..data import DatasetError
    from ..data.splits import fingerprint
    from .preflight import refs_in

    if isinstance(spec, RunSpec):
        refs = {s.dataset for s in spec.train} | {v.dataset for v in dict(spec.select).values() if hasattr(v, "dataset")}
    else:
        refs = set(refs_in(spec.kw))
    refs |= {e.testset.dataset for e in evals}
    out = {}
    for ref in sorted(refs - {"offline"}):
        if ref not in cache:
            try:
                cache[ref] = fingerprint(data_root, ref)
            except (DatasetError, OSError):
                cache[ref] = None
        out[ref] = cache[ref]
    return out


def pending(store: RunStore, keys: Sequence[str]) -> list[str]:
    """Keys that still need work: not done (not trained, failed, or an evaluation the job asks for missing)."""
    return [k for k in keys if store.state(k) != "done"]


class Executor(Protocol):
    """What :func:`execute` drives: ``submit`` job keys, ``wait`` until each has finished or failed (events go
    to ``on_event(kind, key, message)``: ``start``, ``ok``, ``failed``), ``terminate`` on a signal."""

    def submit(self, keys: Sequence[str]) -> None: ...

    def wait(self) -> None: ...

    def terminate(self) -> None: ...


def make_executor(name: str, store: RunStore, *, device: str = "cpu", jobs: int = 1, slurm: dict | None = None,
                  on_event: OnEvent | None = None) -> Executor:
    """The executor called ``name`` (``inline``, ``local``, ``slurm``) for ``store``."""
    on_event = on_event or (lambda *a: None)
    if name == "inline":
        return InlineExecutor(store, device, on_event)
    if name == "local":
        return LocalExecutor(store, device=device, jobs=jobs, on_event=on_event)
    if name == "slurm":
        return SlurmExecutor(store, device, slurm or {}, on_event)
    raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}; got {name!r}")


def execute(plans: Plan | Sequence[Plan], store: RunStore | str | Path, context: Context, *,
            executor: str | Executor = "inline", device: str = "cpu", jobs: int = 1, slurm: dict | None = None,
            on_event: OnEvent | None = None, accum: Mapping[str, int] | None = None) -> pd.DataFrame:
    """Run every job ``plans`` need that the store does not hold yet, wave by wave, with ``executor`` (a name
    for :func:`make_executor`, or an :class:`Executor` the caller keeps to terminate); ``accum`` as in
    :func:`submit_plans`. Returns a table (key, label, kind, state, error)."""
    plans = [plans] if isinstance(plans, Plan) else list(plans)
    store = store if isinstance(store, RunStore) else RunStore(store)
    if not isinstance(context, Context):
        raise TypeError(f"execute needs an engine.Context (data root, store), got {type(context).__name__}")
    ex = make_executor(executor, store, device=device, jobs=jobs, slurm=slurm, on_event=on_event) \
        if isinstance(executor, str) else executor
    waves = submit_plans(plans, store, context, accum)
    tried: set[str] = set()
    for wave in waves:
        todo = pending(store, wave)
        if todo:
            tried.update(todo)
            ex.submit(todo)
            ex.wait()
    table = summary(store, [k for w in waves for k in w])
    # a job that ran here and neither finished nor left an error record (a full or read-only store could not take
    # error.json) failed: never show it as pending
    silent = table.key.isin(tried) & table.state.isin(["pending", "partial"])
    if silent.any():
        known = getattr(ex, "failures", {})
        table.loc[silent, "error"] = [known.get(k) or "the job ended without finishing or recording an error; is "
                                      f"the run store {store.root} full or read-only?" for k in table.key[silent]]
        table.loc[silent, "state"] = "failed"
    return table


def summary(store: RunStore, keys: Sequence[str]) -> pd.DataFrame:
    """One line per job: key, label, kind, state (``done`` only when trained and every evaluation is there) and
    the recorded error of a job that is not done."""
    from ..io import CorruptFile

    rows = []
    for k in keys:
        try:
            job = store.job(k)
            state = store.state(k)
            label, kind = job.get("label", ""), job["kind"]
            err = (store.error(k) or "") if state != "done" else ""
        except CorruptFile as e:
            label, kind, state, err = "", "", "failed", str(e)
        rows.append({"key": k, "label": label, "kind": kind, "state": state, "error": err})
    return pd.DataFrame(rows, columns=["key", "label", "kind", "state", "error"])


class InlineExecutor:
    """Jobs in this process, one after another."""

    def __init__(self, store: RunStore, device: str = "cpu", on_event: OnEvent | None = None):
        self.store, self.device, self.on_event = store, device, on_event or (lambda *a: None)
        self._queue: list[str] = []
        self.failures: dict[str, str] = {}   # key -> what failed, also when the store could not record it

    def submit(self, keys: Sequence[str]) -> None:
        self._queue += list(keys)

    def wait(self) -> None:
        keys, self._queue = self._queue, []
        for i, k in enumerate(keys, 1):
            self.on_event("start", k, f"run {i} of {len(keys)}")
            try:
                from .jobs import run_job

                run_job(self.store.root, k, self.device)
                self.on_event("ok", k, "")
            except KeyboardInterrupt:
                raise
            except Exception as e:  # recorded in error.json; the next jobs still run
                self.failures[k] = f"{type(e).__name__}: {e}"
                self.on_event("failed", k, self.failures[k])

    def terminate(self) -> None:
        self._queue = []   # the running job gets the KeyboardInterrupt itself


class SlurmExecutor:
    """Slurm array jobs through submitit (:mod:`irlib.engine.slurm`); ``wait`` polls the run store."""

    def __init__(self, store: RunStore, device: str, slurm: dict, on_event: OnEvent | None = None):
        self.store, self.device, self.on_event = store, device, on_event or (lambda *a: None)
        self.kw = {k: v for k, v in dict(slurm).items() if v is not None}
        self.poll = float(self.kw.pop("poll_s", 10.0))
        if not device.startswith("cuda"):
            self.kw["gpus_per_run"] = 0
        self._keys: list[str] = []

    def submit(self, keys: Sequence[str]) -> None:
        from . import slurm as sl

        for k in keys:
            self.on_event("start", k, "submitted to Slurm")
        sl.submit(str(self.store.root), list(keys), device=self.device, **self.kw)
        self._keys += list(keys)

    def wait(self) -> None:
        from . import slurm as sl

        keys, self._keys = self._keys, []
        sl.wait(self.store.root, keys, poll_s=self.poll, on_event=self.on_event)

    def terminate(self) -> None:
        """Submitted Slurm tasks keep running (they checkpoint into the store); ``irlib status`` follows them
        and ``scancel`` or :func:`irlib.engine.slurm.cancel` stops them."""
        self._keys = []


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
        self.failures: dict[str, str] = {}   # key -> what the worker said (or how it died), as the inline executor's
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._queue: list[str] = []

    def _spawn(self, slot: int) -> subprocess.Popen:
        env = dict(os.environ, **self.slots[slot])
        if not self.device.startswith("cuda"):
            threads = max(1, (os.cpu_count() or 1) // len(self.slots))
            env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        logs = self.store.root / "_logs"
        logs.mkdir(parents=True, exist_ok=True)
        log = open(logs / f"worker-{slot}.log", "a")
        dev = "cuda:0" if self.device.startswith("cuda") else self.device
        p = subprocess.Popen([sys.executable, "-m", "irlib.engine.worker", str(self.store.root), dev],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, bufsize=1,
                             env=env, start_new_session=True, preexec_fn=die_with_parent)
        log.close()
        with self._lock:
            self._procs.append(p)
        return p

    def submit(self, keys: Sequence[str]) -> None:
        self._queue += list(keys)

    def run(self, keys: Sequence[str]) -> None:
        """``submit`` then ``wait``."""
        self.submit(keys)
        self.wait()

    def wait(self) -> None:
        queue, self._queue = self._queue, []
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
                    self.failures[key] = (f"worker died ({_describe(code)}); the run resumes from its checkpoint "
                                          "next time")
                    self.on_event("failed", key, self.failures[key])
                    proc = None
                    continue
                status, _, msg = reply[len(PROTOCOL):].strip().partition(" ")
                said = msg.partition(" ")[2]   # after the key
                if status != "ok":
                    self.failures[key] = said
                self.on_event("ok" if status == "ok" else "failed", key, said)
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
        stop_process_groups(procs, grace)


def _describe(code: int | None) -> str:
    if code is None:
        return "unknown exit"
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"
