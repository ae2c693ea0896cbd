"""The run store: one folder per run or study, named by the hash of its spec.

``<root>/<key>/`` holds

* ``job.json`` — the spec (``spec``), the evaluations asked of it (``evals``) and the execution context
  (``context``: data root, local weight files); written atomically, merged when a plan asks for more evals;
* ``lock`` — held (``flock``) by the one process working on it: two identical specs train once;
* ``ckpt/last.pt`` — resumable checkpoint (model, optimiser, EMA, trainable loss state; never the frozen
  VGG / DINOv2 / ADM weights), removed when the run is done;
* ``log.csv`` and ``progress.json`` — the training log and live progress (step, loss, s/step, ETA);
* ``final.pt`` — the final (or selected best) weights, and ``evals/<eval key>.json`` — per-image metrics;
* ``done.json`` — written last and atomically, with code version and environment: a run without it is not
  done, whatever else its folder holds, so a killed run is never read as finished.

Executing a job (train + evaluate, or a study) is :mod:`irlib.engine.jobs`; this module only stores.
"""
from __future__ import annotations

import contextlib
import json
import platform
import socket
import subprocess
from pathlib import Path
from typing import Any, Iterator

from filelock import FileLock, Timeout

from ..io import atomic_write_json, read_json
from ..schedules import Schedule
from .context import Context
from .spec import EvalSpec, Limits, Measure, RunSpec, Source, StudySpec, Term, TestSet, canonical_json

_TYPES = {c.__name__: c for c in (RunSpec, Source, Term, Schedule, Limits, TestSet, EvalSpec, StudySpec, Measure)}


def _tupled(v: Any) -> Any:
    if isinstance(v, list):
        return tuple(_tupled(x) for x in v)
    if isinstance(v, dict):
        if "__type__" in v:
            return from_jsonable(v)
        return {k: _tupled(x) for k, x in v.items()}
    return v


def from_jsonable(d: dict) -> Any:
    """Rebuild a spec dataclass from :func:`canonical_json`'s form (lists back to tuples)."""
    cls = _TYPES[d["__type__"]]
    kw = {k: _tupled(v) for k, v in d.items() if k != "__type__"}
    return cls(**kw)


def load_spec(text: str) -> Any:
    return from_jsonable(json.loads(text))


def code_version() -> dict:
    """irlib's version and, in a git checkout, the commit and whether the tree had uncommitted changes."""
    from .. import __version__

    out: dict[str, Any] = {"irlib": __version__, "git": None, "dirty": None}
    repo = Path(__file__).resolve().parents[2]
    if (repo / ".git").exists():
        try:
            out["git"] = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                                        text=True, timeout=10).stdout.strip() or None
            st = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10).stdout
            out["dirty"] = bool(st.strip())
        except (OSError, subprocess.SubprocessError):
            pass
    return out


def environment(device: str) -> dict:
    import torch

    env = {"python": platform.python_version(), "torch": torch.__version__, "host": socket.gethostname(),
           "device": device}
    if device.startswith("cuda") and torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return env


class RunStore:
    """Folders of runs and studies under ``root``; see the module docstring for what each holds."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def dir(self, key: str) -> Path:
        return self.root / key

    # ------------------------------------------------------------------ job files
    def submit(self, spec: RunSpec | StudySpec, evals: list[EvalSpec] = (), context: Context | None = None) -> str:
        """Record (or extend) the job of ``spec``; returns its key. Evaluations already asked are kept."""
        key = spec.key()
        path = self.dir(key) / "job.json"
        job = read_json(path) if path.is_file() else {
            "kind": "run" if isinstance(spec, RunSpec) else "study", "spec": json.loads(canonical_json(spec)),
            "label": getattr(spec, "label", "") or getattr(spec, "name", ""), "evals": []}
        have = {canonical_json(load_spec(json.dumps(e))) for e in job["evals"]}
        for ev in evals:
            if canonical_json(ev) not in have:
                job["evals"].append(json.loads(canonical_json(ev)))
                have.add(canonical_json(ev))
        if context is not None:
            job["context"] = context.to_json()
        atomic_write_json(path, job)
        return key

    def job(self, key: str) -> dict:
        path = self.dir(key) / "job.json"
        if not path.is_file():
            raise FileNotFoundError(f"no job {key} in the run store {self.root}")
        job = read_json(path)
        job["spec_obj"] = from_jsonable(job["spec"])
        job["eval_objs"] = [from_jsonable(e) for e in job["evals"]]
        return job

    def context(self, key: str) -> Context:
        """The execution context recorded with job ``key`` (refused, naming the file, when there is none)."""
        return Context.from_json(self.job(key).get("context"), self.dir(key) / "job.json")

    # ------------------------------------------------------------------ state
    def done(self, key: str) -> dict | None:
        p = self.dir(key) / "done.json"
        return read_json(p) if p.is_file() else None

    def eval_result(self, key: str, ev: EvalSpec) -> dict | None:
        p = self.dir(key) / "evals" / f"{ev.key()}.json"
        return read_json(p) if p.is_file() else None

    def study_result(self, key: str) -> Any:
        import pandas as pd

        if not self.done(key):
            return None
        return pd.read_csv(self.dir(key) / "rows.csv", keep_default_na=False, na_values=[""])

    def progress(self, key: str) -> dict | None:
        p = self.dir(key) / "progress.json"
        try:
            return json.loads(p.read_text())
        except (OSError, ValueError):
            return None

    def state(self, key: str) -> str:
        """``done``, ``running`` (its lock is held), ``partial`` (a checkpoint, nobody on it), ``failed``
        (an error record and nobody on it) or ``pending``."""
        d = self.dir(key)
        if (d / "done.json").is_file():
            return "done"
        if self._locked(key):
            return "running"
        if (d / "error.json").is_file():
            return "failed"
        if (d / "ckpt" / "last.pt").is_file():
            return "partial"
        return "pending"

    def _locked(self, key: str) -> bool:
        p = self.dir(key) / "lock"
        if not p.is_file():
            return False
        try:
            with FileLock(p, timeout=0, is_singleton=False):
                return False
        except Timeout:
            return True
        except OSError:   # a read-only store: nobody can be writing to it
            return False

    @contextlib.contextmanager
    def lock(self, key: str, wait: bool = True) -> Iterator[bool]:
        """Hold the run's lock (``filelock``); yields False at once when ``wait`` is off and another process
        holds it."""
        p = self.dir(key) / "lock"
        p.parent.mkdir(parents=True, exist_ok=True)
        lk = FileLock(p, timeout=-1 if wait else 0, is_singleton=False)
        try:
            lk.acquire()
        except Timeout:
            yield False
            return
        try:
            yield True
        finally:
            lk.release()
