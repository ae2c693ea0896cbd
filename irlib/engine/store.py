"""The run store: one folder per run or study, named by the hash of its spec.

``<root>/<key>/`` holds

* ``job.json`` — the spec (``spec``), the evaluations asked of it (``evals``), the execution context
  (``context``: data root, local weight files) and the data its results were made from (``data``: that data
  root and a fingerprint of each split, :func:`irlib.data.splits.fingerprint`) and the torch thread count every
  executor runs it with (``threads``, :func:`default_threads`); written atomically, merged when a
  plan asks for more evals. Re-submitting it on a data root whose splits differ raises :class:`DataMismatch`
  (naming both roots) once the job has results, instead of silently reusing them;
* ``accum`` in ``job.json`` — the gradient-accumulation factor the run trains with (``irlib reproduce --gpu``;
  1 by default): how it is executed, not what it is, so it is not part of the key;
* ``lock`` — held (``flock``) by the one process working on it: two identical specs train once;
* ``ckpt/last.pt`` — resumable checkpoint (model, optimiser, EMA, trainable loss state; never the frozen
  VGG / DINOv2 / ADM weights), removed when the run is done;
* ``log.csv`` and ``progress.json`` — the training log and live progress (step, loss, s/step, ETA);
* ``final.pt`` — the final (or selected best) weights, and ``evals/<eval key>.json`` — per-image metrics;
* ``done.json`` — written last and atomically, with code version and environment: a run without it is not
  done, whatever else its folder holds, so a killed run is never read as finished;
* ``error.json`` — the last failure (training or an evaluation), removed when the job next succeeds.

A run is *done* only when its ``done.json`` and every evaluation its job asks for are there. Every read of a store
file catches corruption: a corrupt ``done.json``, ``evals/*.json``, ``error.json`` or ``rows.csv`` is quarantined
(renamed ``NAME.corrupt-<time>``, :func:`irlib.io.quarantine`) and the work it recorded is redone; a corrupt
``job.json`` raises :class:`irlib.io.CorruptFile` naming it (re-submitting the plan rewrites it). Reading never
writes unless something is corrupt, so ``gather`` and ``irlib status`` work on a read-only store.

Executing a job (train + evaluate, or a study) is :mod:`irlib.engine.jobs`; this module only stores.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import socket
import subprocess
from pathlib import Path
from typing import Any, Iterator

from filelock import FileLock, Timeout

from ..io import CorruptFile, atomic_write_json, quarantine, read_json
from ..schedules import Schedule
from .context import Context
from .spec import EvalSpec, Limits, Measure, RunSpec, Source, StudySpec, Term, TestSet, canonical_json

log = logging.getLogger(__name__)

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


class DataMismatch(ValueError):
    """A job's results were made from other data than the data root it is asked to use now."""


def default_threads() -> int:
    """The torch intra-op thread count a new job records (``IRLIB_THREADS``, default 1). Every executor runs
    the job with its recorded count (:func:`irlib.engine.jobs.run_job`): CPU reductions split their sums by
    thread, so the bits of a run would otherwise depend on ``--jobs`` and the executor."""
    value = os.environ.get("IRLIB_THREADS", "1")
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"IRLIB_THREADS={value!r}: expected a positive integer (torch threads per job)")
    return n


class RunStore:
    """Folders of runs and studies under ``root``; see the module docstring for what each holds."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def dir(self, key: str) -> Path:
        return self.root / key

    # ------------------------------------------------------------------ reading, healing
    def _heal(self, path: Path, what: str) -> None:
        """Quarantine the corrupt store file ``path`` (the work it recorded is redone) and say so."""
        moved = quarantine(path)
        if moved is not None:
            log.warning("%s: %s; moved aside to %s, the work it recorded will be redone", path, what, moved.name)
        else:
            log.warning("%s: %s; ignored (the store is read-only: delete it and re-run to redo that work)", path, what)

    def _record(self, path: Path) -> dict | None:
        """The JSON object in the store file ``path``; None when missing or corrupt (then quarantined)."""
        if not path.is_file():
            return None
        try:
            rec = read_json(path)
        except CorruptFile as e:
            self._heal(path, str(e).split(": ", 1)[-1].split(";")[0])
            return None
        except OSError as e:
            self._heal(path, f"unreadable ({e.strerror or e})")
            return None
        if not isinstance(rec, dict):
            self._heal(path, f"not a JSON object ({type(rec).__name__})")
            return None
        return rec

    # ------------------------------------------------------------------ job files
    def has_results(self, key: str) -> bool:
        """Whether job ``key`` holds anything made from its data: a checkpoint, weights, evaluations, a record."""
        d = self.dir(key)
        return any((d / n).exists() for n in ("done.json", "final.pt", "ckpt/last.pt", "rows.csv")) or \
            any((d / "evals").glob("*.json"))

    def submit(self, spec: RunSpec | StudySpec, evals: list[EvalSpec] = (), context: Context | None = None,
               data: dict[str, dict | None] | None = None, accum: int | None = None) -> str:
        """Record (or extend) the job of ``spec``; returns its key. Evaluations already asked are kept. A corrupt
        ``job.json`` is quarantined and rewritten from ``spec``; an unchanged one is not rewritten. ``data``:
        data reference -> fingerprint (None: not readable now) of what the job reads under ``context.data_root``;
        a job with results made from other data raises :class:`DataMismatch`. ``accum``: the gradient-accumulation
        factor a run trains with (an execution setting like the context, not part of its spec or key; None keeps
        the recorded one, 1 for a new job)."""
        key = spec.key()
        path = self.dir(key) / "job.json"
        old = None
        if path.is_file():
            try:
                old = read_json(path)
                self._check_job(path, old)
            except CorruptFile as e:
                self._heal(path, str(e).split(": ", 1)[-1].split(";")[0])
                old = None
        job = json.loads(json.dumps(old)) if old is not None else {
            "kind": "run" if isinstance(spec, RunSpec) else "study", "spec": json.loads(canonical_json(spec)),
            "label": getattr(spec, "label", "") or getattr(spec, "name", ""), "evals": [],
            "threads": default_threads()}
        if isinstance(spec, RunSpec) and (accum is not None or old is None):   # an older record without it: 1
            if accum is not None and (not isinstance(accum, int) or accum < 1):
                raise ValueError(f"gradient accumulation must be a positive integer, got {accum!r}")
            job["accum"] = int(accum or job.get("accum") or 1)
        have = {canonical_json(load_spec(json.dumps(e))) for e in job["evals"]}
        for ev in evals:
            if canonical_json(ev) not in have:
                job["evals"].append(json.loads(canonical_json(ev)))
                have.add(canonical_json(ev))
        if context is not None:
            if data is not None:
                job["data"] = self._data_record(path, job, context, data, self.has_results(key))
            job["context"] = context.to_json()
        if job != old:
            try:
                atomic_write_json(path, job)
            except OSError as e:   # a read-only store: fine as long as nothing new is asked of the job
                if old is None or old.get("evals") != job["evals"]:
                    raise
                log.warning("%s: not updated (%s); the store is read-only", path, e.strerror or e)
        return key

    @staticmethod
    def _data_record(path: Path, job: dict, context: Context, data: dict[str, dict | None], used: bool) -> dict:
        """The job's ``data`` record after this submission (see :meth:`submit`)."""
        root = str(context.data_root)
        rec = job.get("data") if isinstance(job.get("data"), dict) else None
        if rec is None or not used:   # nothing made from the old data yet: record the new
            return {"root": root, "refs": dict(data)}
        have = rec.get("refs") or {}
        same = ("files", "bytes", "content")
        for ref, fp in data.items():
            old = have.get(ref)
            if fp and old and any(fp.get(k) != old.get(k) for k in same):
                where = (f"the data under {root} changed since" if rec.get("root") == root else
                         f"{root} (--data-root now) holds other data than {rec.get('root')}, which")
                raise DataMismatch(
                    f"{path}: {job.get('label') or job.get('kind')} ({path.parent.name}) has results made from "
                    f"{ref}; {where} they were made from ({ref}: {old.get('files')} files, {old.get('bytes')} bytes "
                    f"then; {fp.get('files')} files, {fp.get('bytes')} bytes now). Use --data-root "
                    f"{rec.get('root')} to keep these results, or another --out (a new run store) for the new data; "
                    f"deleting {path.parent} redoes this job on the new data")
        return {"root": rec.get("root", root), "refs": {**{k: v for k, v in data.items() if v}, **{k: v for k, v in have.items() if v}}}

    @staticmethod
    def _check_job(path: Path, job: Any) -> None:
        if not isinstance(job, dict) or not isinstance(job.get("spec"), dict) or not isinstance(job.get("evals"), list) \
                or job.get("kind") not in ("run", "study"):
            raise CorruptFile(path, "not a job record (kind, spec, evals)", "re-run the plan to rewrite it")
        try:
            from_jsonable(job["spec"])
            for e in job["evals"]:
                from_jsonable(e)
        except (KeyError, TypeError, ValueError) as e:
            raise CorruptFile(path, f"a spec in it cannot be rebuilt ({type(e).__name__}: {e})",
                              "re-run the plan to rewrite it") from None

    def job(self, key: str) -> dict:
        """The job record of ``key`` (``spec_obj`` and ``eval_objs`` rebuilt); :class:`CorruptFile` naming
        ``job.json`` when it cannot be read (re-running the plan rewrites it)."""
        path = self.dir(key) / "job.json"
        if not path.is_file():
            raise FileNotFoundError(f"no job {key} in the run store {self.root}")
        job = read_json(path, "re-run the plan (irlib reproduce or the notebook) to rewrite it, or delete its folder")
        self._check_job(path, job)
        job["spec_obj"] = from_jsonable(job["spec"])
        job["eval_objs"] = [from_jsonable(e) for e in job["evals"]]
        return job

    def context(self, key: str) -> Context:
        """The execution context recorded with job ``key`` (refused, naming the file, when there is none)."""
        return Context.from_json(self.job(key).get("context"), self.dir(key) / "job.json")

    # ------------------------------------------------------------------ state
    def done(self, key: str) -> dict | None:
        """The ``done.json`` record (training finished, or a study computed); None when missing or corrupt."""
        return self._record(self.dir(key) / "done.json")

    def eval_result(self, key: str, ev: EvalSpec) -> dict | None:
        res = self._record(self.dir(key) / "evals" / f"{ev.key()}.json")
        if res is not None and not isinstance(res.get("per_image"), dict):
            self._heal(self.dir(key) / "evals" / f"{ev.key()}.json", "no per-image metrics")
            return None
        return res

    def error(self, key: str) -> str | None:
        """The recorded failure of job ``key`` (``error.json``), or None."""
        rec = self._record(self.dir(key) / "error.json")
        return None if rec is None else str(rec.get("error", "unknown error (error.json has no message)"))

    def missing_evals(self, key: str) -> list[EvalSpec]:
        """The evaluations job ``key`` asks for that have no (readable) result."""
        job = self.job(key)
        if job["kind"] != "run":
            return []
        return [e for e in job["eval_objs"] if self.eval_result(key, e) is None]

    def study_result(self, key: str) -> Any:
        import pandas as pd

        if not self.done(key):
            return None
        path = self.dir(key) / "rows.csv"
        try:
            return pd.read_csv(path, keep_default_na=False, na_values=[""])
        except (OSError, ValueError) as e:   # missing, empty or garbled: the study is computed again
            self._heal(path, f"unreadable study rows ({type(e).__name__})")
            self._heal(self.dir(key) / "done.json", f"its {path.name} is unreadable")
            return None

    def progress(self, key: str) -> dict | None:
        p = self.dir(key) / "progress.json"
        try:
            return json.loads(p.read_text())
        except (OSError, ValueError):
            return None

    def state(self, key: str) -> str:
        """``done`` (trained, or computed, and every evaluation asked of it there), ``running`` (its lock is
        held), ``failed`` (an error record and nobody on it: training or an evaluation failed), ``partial``
        (a checkpoint, or trained with evaluations missing, nobody on it) or ``pending``. A corrupt
        ``job.json`` raises :class:`CorruptFile`."""
        d = self.dir(key)
        done = self.done(key)
        if done is not None and not self.missing_evals(key):
            return "done"
        if self._locked(key):
            return "running"
        if (d / "error.json").is_file() and self.error(key) is not None:
            return "failed"
        if done is not None or (d / "ckpt" / "last.pt").is_file():
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
