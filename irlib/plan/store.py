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

:func:`run_job` executes one entry (train + evaluate, or a study); it is idempotent and resumes.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import fcntl
import json
import os
import platform
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

from .spec import EvalSpec, Limits, Measure, RunSpec, Source, StudySpec, Term, TestSet, canonical_json
from ..schedules import Schedule

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


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    tmp.write_text(text)
    os.replace(tmp, path)


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
    def submit(self, spec: RunSpec | StudySpec, evals: list[EvalSpec] = (), context: dict | None = None) -> str:
        """Record (or extend) the job of ``spec``; returns its key. Evaluations already asked are kept."""
        key = spec.key()
        path = self.dir(key) / "job.json"
        job = json.loads(path.read_text()) if path.is_file() else {
            "kind": "run" if isinstance(spec, RunSpec) else "study", "spec": json.loads(canonical_json(spec)),
            "label": getattr(spec, "label", "") or getattr(spec, "name", ""), "evals": []}
        have = {canonical_json(load_spec(json.dumps(e))) for e in job["evals"]}
        for ev in evals:
            if canonical_json(ev) not in have:
                job["evals"].append(json.loads(canonical_json(ev)))
                have.add(canonical_json(ev))
        if context is not None:
            job["context"] = context
        _atomic_write(path, json.dumps(job, indent=1))
        return key

    def job(self, key: str) -> dict:
        path = self.dir(key) / "job.json"
        if not path.is_file():
            raise FileNotFoundError(f"no job {key} in the run store {self.root}")
        job = json.loads(path.read_text())
        job["spec_obj"] = from_jsonable(job["spec"])
        job["eval_objs"] = [from_jsonable(e) for e in job["evals"]]
        return job

    # ------------------------------------------------------------------ state
    def done(self, key: str) -> dict | None:
        p = self.dir(key) / "done.json"
        return json.loads(p.read_text()) if p.is_file() else None

    def eval_result(self, key: str, ev: EvalSpec) -> dict | None:
        p = self.dir(key) / "evals" / f"{ev.key()}.json"
        return json.loads(p.read_text()) if p.is_file() else None

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
        with open(p, "a") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(f, fcntl.LOCK_UN)
        return False

    @contextlib.contextmanager
    def lock(self, key: str, wait: bool = True) -> Iterator[bool]:
        """Hold the run's lock; yields False at once when ``wait`` is off and another process holds it."""
        p = self.dir(key) / "lock"
        p.parent.mkdir(parents=True, exist_ok=True)
        with open(p, "a") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    # ------------------------------------------------------------------ weights
    def load_model(self, spec: RunSpec, fb=None, device: str = "cpu"):
        """The trained network of a finished run (its ``final.pt``)."""
        import torch

        from .features import FeatureBank
        from .runner import build_model

        if not self.done(spec.key()):
            raise RuntimeError(f"run {spec.key()} ({spec.label or spec.net}) is not finished; run it first")
        fb = fb or FeatureBank.for_run(spec, device, self.job(spec.key()).get("context"))
        model = build_model(spec, fb)
        sd = torch.load(self.dir(spec.key()) / "final.pt", map_location="cpu", weights_only=True)
        model.load_state_dict(sd["model"])
        return model.eval().to(device)


# ---------------------------------------------------------------------------------------- execution
class DependencyNotReady(RuntimeError):
    """A job needs another run's weights that are not finished yet."""


def run_job(store_root: str | Path, key: str, device: str = "cpu") -> None:
    """Execute job ``key`` of the store at ``store_root``: train (resuming) and evaluate a run, or compute a
    study. Idempotent: a finished run only gets the evaluations it still lacks; safe to call again after a
    kill or a preemption. Errors are recorded in ``error.json`` and re-raised."""
    store = RunStore(store_root)
    job = store.job(key)
    with store.lock(key):
        try:
            (_train_and_evaluate if job["kind"] == "run" else _study)(store, key, job, device)
            (store.dir(key) / "error.json").unlink(missing_ok=True)
        except KeyboardInterrupt:
            raise
        except Exception as e:
            import traceback

            _atomic_write(store.dir(key) / "error.json", json.dumps(
                {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-4000:],
                 "when": _dt.datetime.now().isoformat(timespec="seconds")}, indent=1))
            raise


def _feature_bank(spec, device: str, job: dict):
    from .features import FeatureBank

    return FeatureBank.for_run(spec, device, job.get("context"))


def _train_and_evaluate(store: RunStore, key: str, job: dict, device: str) -> None:
    import torch

    from .runner import evaluate_run, test_pairs

    spec: RunSpec = job["spec_obj"]
    d = store.dir(key)
    ctx = job.get("context") or {}
    data_root = ctx.get("data_root", "data")
    fb = _feature_bank(spec, device, job)
    model = None
    if not store.done(key):
        for dep in spec.deps():
            if not store.done(dep.key()):
                raise DependencyNotReady(f"run {key} needs run {dep.key()} ({dep.label or dep.net}) to finish first")
        model = _train(store, key, spec, fb, data_root, device, job.get("label") or spec.net)
    for ev in job["eval_objs"]:
        if store.eval_result(key, ev) is not None:
            continue
        done = store.done(key)
        if done.get("collapsed"):
            res = {"per_image": {}, "dataset": {}, "n": 0, "collapsed": True}
        else:
            if model is None:
                model = store.load_model(spec, fb, device)
            res = evaluate_run(model, spec, ev, test_pairs(ev.testset, data_root), fb, device)
        res["eval"] = json.loads(canonical_json(ev))
        _atomic_write(d / "evals" / f"{ev.key()}.json", json.dumps(res))
    if model is not None:
        del model
        if device.startswith("cuda"):
            torch.cuda.empty_cache()


def _train(store: RunStore, key: str, spec: RunSpec, fb, data_root: str, device: str, label: str = ""):
    import pandas as pd
    import torch

    from ..train import atomic_save, seed_everything
    from .runner import build_model, build_terms, effective_schedule, train_forward, training_batches

    d = store.dir(key)
    sched = effective_schedule(spec)
    seed_everything(spec.seed)
    model = build_model(spec, fb)
    terms = build_terms(spec, model, fb, load_run=lambda r: store.load_model(r, fb, device))
    batches = training_batches(spec, data_root, sched)
    progress = ProgressWriter(d / "progress.json", key, label or spec.label or spec.net, sched.steps)
    select = dict(spec.select)
    best = {"value": -float("inf"), "step": None}
    if select:
        from .runner import evaluate_run, test_pairs

        sel_ev = EvalSpec(select["on"])
        sel_pairs = test_pairs(select["on"], data_root)
        every = int(select["best_every"]) if spec.limits is None else 1

        def on_step(tr, terms_):
            progress(tr, terms_)
            if tr.step % every == 0 or tr.step == sched.steps:
                v = float(pd.Series(evaluate_run(tr.eval_model(), spec, sel_ev, sel_pairs, fb, device)["per_image"]["PSNR"]).mean())
                tr.model.train()
                if v > best["value"]:
                    best.update(value=v, step=tr.step)
                    atomic_save({"model": tr.eval_model().state_dict(), "step": tr.step, "psnr": v}, d / "best.pt")
    else:
        on_step = progress
    tr = build_trainer(sched, model, terms, batches, device, ckpt_dir=d / "ckpt", forward=train_forward(spec, fb),
                       callback=on_step)
    t0 = time.time()
    try:
        tr.fit(sched.steps)
    except KeyboardInterrupt:
        tr.save()  # resume exactly here next time
        raise
    pd.DataFrame(tr.log).to_csv(d / "log.csv", index=False)
    final = tr.eval_model()
    if select and (d / "best.pt").is_file():
        sd = torch.load(d / "best.pt", map_location="cpu", weights_only=True)
        final.load_state_dict(sd["model"])
        best["step"] = sd["step"]
    atomic_save({"model": final.state_dict(), "step": tr.step}, d / "final.pt")
    collapse_step = next((r["step"] for r in tr.log if r.get("collapsed")), None)
    record = {"key": key, "label": label or spec.label, "steps": tr.step, "collapsed": tr.collapsed,
              "collapse_step": collapse_step, "best_step": best["step"], "seconds_this_session": round(time.time() - t0, 1),
              "finished": _dt.datetime.now().isoformat(timespec="seconds"), "code": code_version(),
              "env": environment(device)}
    _atomic_write(d / "done.json", json.dumps(record, indent=1))
    shutil.rmtree(d / "ckpt", ignore_errors=True)   # finished runs keep only their final weights
    (d / "best.pt").unlink(missing_ok=True)
    return final


def build_trainer(sched, model, terms: dict, batches, device: str = "cpu", ckpt_dir=None, forward=None,
                  callback=None, progress: bool = True):
    """The :class:`irlib.train.Trainer` of one run, following its schedule: optimiser, betas, weight decay,
    learning-rate decay, EMA, gradient clipping; checkpoints every quarter of the run (at most every 2,000
    steps) and at least every 10 minutes, so a preempted job loses little."""
    from ..train import Trainer

    return Trainer(model, batches, terms, lr=sched.lr, weight_decay=sched.weight_decay, betas=tuple(sched.betas),
                   optimizer=sched.optimizer, grad_clip=sched.grad_clip, ema_decay=sched.ema, device=device,
                   ckpt_dir=ckpt_dir, ckpt_every=max(1, min(2000, sched.steps // 4)) if ckpt_dir else 0,
                   ckpt_seconds=600, forward=forward, on_collapse="stop", progress=progress,
                   scheduler=sched.scheduler if sched.decay != "none" else None, callback=callback)


class ProgressWriter:
    """Trainer callback writing ``progress.json`` (at most every ``every`` seconds and at the last step)."""

    def __init__(self, path: Path, key: str, label: str, total: int, every: float = 2.0):
        self.path, self.key, self.label, self.total, self.every = path, key, label, total, every
        self._last, self._t0, self._s0 = 0.0, None, None

    def __call__(self, tr, terms: dict) -> None:
        now = time.time()
        if self._t0 is None:
            self._t0, self._s0 = now, tr.step - 1
        if now - self._last < self.every and tr.step < self.total:
            return
        self._last = now
        rate = (now - self._t0) / max(1, tr.step - self._s0)
        _atomic_write(self.path, json.dumps({
            "key": self.key, "label": self.label, "step": tr.step, "total": self.total,
            "loss": terms.get("loss"), "s_per_step": round(rate, 4), "eta_s": round(rate * (self.total - tr.step), 1),
            "updated": now}))


def _study(store: RunStore, key: str, job: dict, device: str) -> None:
    import importlib

    spec: StudySpec = job["spec_obj"]
    if store.done(key):
        return
    for dep in spec.deps:
        if not store.done(dep.key()):
            raise DependencyNotReady(f"study {spec.name} needs run {dep.key()} ({dep.label or dep.net}) to finish first")
    ctx = job.get("context") or {}
    mod, fn = spec.fn.split(":")
    study_ctx = StudyContext(store=store, spec=spec, device=device, data_root=ctx.get("data_root", "data"),
                             fb=_feature_bank(spec, device, job), out=store.dir(key))
    rows = getattr(importlib.import_module(mod), fn)(study_ctx, **dict(spec.kw))
    _atomic_write(store.dir(key) / "rows.csv", rows.to_csv(index=False))
    _atomic_write(store.dir(key) / "done.json", json.dumps({
        "key": key, "study": spec.name, "finished": _dt.datetime.now().isoformat(timespec="seconds"),
        "code": code_version(), "env": environment(device)}, indent=1))


@dataclasses.dataclass
class StudyContext:
    """What a study function gets: the store (to load its dependency runs), its spec, the device, the data
    root, the feature networks and its own folder ``out`` (for arrays the figures reuse)."""

    store: RunStore
    spec: StudySpec
    device: str
    data_root: str
    fb: Any
    out: Path

    def model(self, run: RunSpec):
        return self.store.load_model(run, self.fb, self.device)
