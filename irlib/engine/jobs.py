"""Executing one job of the run store: train (resuming) and evaluate a run, or compute a study.

:func:`run_job` is idempotent: a finished run only gets the evaluations it still lacks, and it is safe to call
again after a kill or a preemption. Errors are recorded in the job's ``error.json`` and re-raised; an evaluation
that fails is a failure of the job (the other evaluations still run) and is retried next time.

Damaged records heal: a truncated ``ckpt/last.pt`` is quarantined and training restarts from scratch; an
unreadable ``final.pt`` is quarantined with the ``done.json`` and evaluations made from it, and the run trains
again (see :mod:`irlib.engine.store` for the other files).
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import json
import logging
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Sequence

from ..io import CorruptFile, atomic_torch_save, atomic_write_json, atomic_write_text, clean_partials, quarantine
from .context import Context
from .features import FeatureBank
from .runner import build_model
from .spec import PRECISIONS, SELECT_RULES, EvalSpec, RunSpec, StudySpec, canonical_json
from .store import RunStore, code_version, environment

log = logging.getLogger(__name__)


def load_model(store: RunStore, spec: RunSpec, fb=None, device: str = "cpu"):
    """The trained network of a finished run (its ``final.pt``), built with the feature networks of its job."""
    import torch

    if not store.done(spec.key()):
        raise RuntimeError(f"run {spec.key()} ({spec.label or spec.net}) is not finished; run it first")
    fb = fb or FeatureBank.for_run(spec, device, store.context(spec.key()))
    model = build_model(spec, fb)
    path = store.dir(spec.key()) / "final.pt"
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(sd["model"])
    except Exception as e:   # missing, truncated, garbled (RuntimeError, OSError, EOFError, pickle/zip errors), wrong
        what = ("missing although done.json says the run finished" if isinstance(e, FileNotFoundError) else
                f"unreadable or not this run's weights ({type(e).__name__}: {str(e)[:120]})")
        moved = _quarantine_training(store, spec.key(), f"{path}: {what}")
        raise CorruptFile(path, what, "moved aside with its done.json and evaluations: re-run the plan to train the "
                          "run again" if moved else "delete it and its done.json, then re-run to train it again") from None
    return model.eval().to(device)


class DependencyNotReady(RuntimeError):
    """A job needs another run's weights that are not finished yet."""


def run_job(store_root: str | Path, key: str, device: str = "cpu") -> None:
    """Execute job ``key`` of the store at ``store_root``: train (resuming) and evaluate a run, or compute a
    study. Idempotent: a finished run only gets the evaluations it still lacks; safe to call again after a
    kill or a preemption. Errors are recorded in ``error.json`` and re-raised."""
    store = RunStore(store_root)
    if not (store.dir(key) / "job.json").is_file():
        raise FileNotFoundError(f"no job {key} in the run store {store.root}")
    with store.lock(key):
        try:
            clean_partials(store.dir(key))   # litter of a writer killed mid-write
            job = store.job(key)
            with torch_threads(int(job.get("threads") or 1)):
                (_train_and_evaluate if job["kind"] == "run" else _study)(store, key, job, device)
            (store.dir(key) / "error.json").unlink(missing_ok=True)
        except KeyboardInterrupt:
            raise
        except Exception as e:
            import traceback

            try:
                atomic_write_text(store.dir(key) / "error.json", json.dumps(
                    {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-4000:],
                     "when": _dt.datetime.now().isoformat(timespec="seconds")}, indent=1))
            except OSError:   # a read-only or full store: the exception itself still says what failed
                pass
            raise


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the body with ``n`` torch intra-op threads (the job's recorded count), then restore the caller's: the
    inline executor inside a notebook kernel, a local worker with its ``OMP_NUM_THREADS`` and a Slurm task all
    compute a job's bits the same way."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class EvaluationFailed(RuntimeError):
    """A run trained but one or more of its evaluations failed (recorded; retried on the next run)."""


def _quarantine_training(store: RunStore, key: str, why: str) -> bool:
    """Move aside a finished run's weights, its ``done.json`` and the evaluations made from them, so the next
    execution trains it again; False when the store is read-only (nothing moved)."""
    d = store.dir(key)
    moved = quarantine(d / "done.json") is not None if (d / "done.json").exists() else True
    if moved:
        for name in ("final.pt", "evals"):
            if (d / name).exists():
                quarantine(d / name)
        log.warning("run %s: %s; its final.pt, done.json and evaluations were moved aside (*.corrupt-<time>): it "
                    "trains again", key, why)
    return moved


def _checked_checkpoint(path: Path) -> None:
    """Quarantine the resumable checkpoint ``path`` when it cannot be read (truncated by a full disk, garbled):
    training then restarts from scratch instead of failing on every re-run."""
    import torch

    if not path.is_file():
        return
    try:
        torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception as e:   # torch raises RuntimeError, OSError, EOFError, pickle errors, zipfile errors...
        moved = quarantine(path)
        log.warning("%s: unreadable checkpoint (%s: %s); moved aside to %s, training restarts from step 0",
                    path, type(e).__name__, str(e)[:120], moved.name if moved else "nowhere (read-only)")
        if moved is None:
            raise CorruptFile(path, f"unreadable checkpoint ({type(e).__name__})",
                              "delete it to restart the run from scratch") from None


def _feature_bank(spec, device: str, ctx: Context) -> FeatureBank:
    return FeatureBank.for_run(spec, device, ctx)


def _train_and_evaluate(store: RunStore, key: str, job: dict, device: str) -> None:
    import torch

    from .runner import evaluate_run, test_pairs

    spec: RunSpec = job["spec_obj"]
    d = store.dir(key)
    ctx = store.context(key)
    data_root = str(ctx.data_root)
    fb = _feature_bank(spec, device, ctx)
    model = None
    missing = [ev for ev in job["eval_objs"] if store.eval_result(key, ev) is None]
    if store.done(key) and missing:
        try:
            model = load_model(store, spec, fb, device)
        except CorruptFile:
            if store.done(key):   # a read-only store: it could not be moved aside
                raise
            missing = list(job["eval_objs"])
    if not store.done(key):
        for dep in spec.deps():
            if not store.done(dep.key()):
                raise DependencyNotReady(f"run {key} needs run {dep.key()} ({dep.label or dep.net}) to finish first")
        model = _train(store, key, spec, fb, data_root, device, job.get("label") or spec.net,
                       accum=int(job.get("accum") or 1))
        missing = list(job["eval_objs"])   # evaluations left by an earlier training are redone from these weights
    failures = []
    for ev in missing:
        try:
            if store.done(key).get("collapsed"):
                res = {"per_image": {}, "dataset": {}, "n": 0, "collapsed": True}
            else:
                res = evaluate_run(model, spec, ev, test_pairs(ev.testset, data_root), fb, device)
            res["eval"] = json.loads(canonical_json(ev))
            atomic_write_json(d / "evals" / f"{ev.key()}.json", res, indent=None)
        except KeyboardInterrupt:
            raise
        except Exception as e:   # the other evaluations still run; this one is retried next time
            log.warning("run %s: evaluation on %s failed: %s: %s", key, ev.testset.dataset, type(e).__name__, e)
            failures.append(f"{ev.testset.dataset} ({ev.key()}): {type(e).__name__}: {e}")
    if model is not None:
        del model
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    if failures:
        raise EvaluationFailed(f"run {key} trained, but {len(failures)} of {len(job['eval_objs'])} evaluations "
                               f"failed: " + "; ".join(failures)[:1500])


def _train(store: RunStore, key: str, spec: RunSpec, fb, data_root: str, device: str, label: str = "",
           accum: int = 1):
    import pandas as pd
    import torch

    from ..train import seed_everything
    from .runner import build_terms, effective_schedule, train_forward, training_batches

    d = store.dir(key)
    sched = effective_schedule(spec)
    seed_everything(spec.seed)
    model = build_model(spec, fb)
    terms = build_terms(spec, model, fb, load_run=lambda r: load_model(store, r, fb, device))
    batches = training_batches(spec, data_root, sched)
    _checked_checkpoint(d / "ckpt" / "last.pt")
    progress = ProgressWriter(d / "progress.json", key, label or spec.label or spec.net, sched.steps)
    select = dict(spec.select)
    best: dict[str, Any] = {"kept": None, "step": None, "history": []}
    if select:
        from .runner import evaluate_run, test_pairs

        rule = select.get("rule", "psnr")
        sel_ev = select_eval(spec)
        sel_pairs = test_pairs(select["on"], data_root)
        every = int(select["best_every"]) if spec.limits is None else 1
        best["kept"] = _kept_scores(d / "best.pt")   # a resumed run keeps comparing with what it already kept

        def on_step(tr, terms_):
            progress(tr, terms_)
            if tr.step % every == 0 or tr.step == sched.steps:
                per = evaluate_run(tr.eval_model(), spec, sel_ev, sel_pairs, fb, device)["per_image"]
                psnr = float(pd.Series(per["PSNR"]).mean())
                ssim = float(pd.Series(per["SSIM"]).mean()) if per.get("SSIM") else float("nan")
                tr.model.train()
                best["history"].append([tr.step, round(psnr, 4), round(ssim, 6)])
                if improves(rule, best["kept"], psnr, ssim):
                    best.update(kept=(psnr, ssim), step=tr.step)
                    atomic_torch_save({"model": tr.eval_model().state_dict(), "step": tr.step, "psnr": psnr,
                                       "ssim": ssim}, d / "best.pt")
    else:
        on_step = progress
    ran = run_precision(spec.precision, device)
    tr = build_trainer(sched, model, terms, batches, device, ckpt_dir=d / "ckpt", forward=train_forward(spec, fb),
                       callback=on_step, accum=accum, amp="fp16" if ran == "fp16" else None)
    t0 = time.time()
    try:
        tr.fit(sched.steps)
    except KeyboardInterrupt:
        tr.save()  # resume exactly here next time
        raise
    atomic_write_text(d / "log.csv", pd.DataFrame(tr.log).to_csv(index=False))
    final = tr.eval_model()
    if select and (d / "best.pt").is_file():
        try:
            sd = torch.load(d / "best.pt", map_location="cpu", weights_only=True)
            final.load_state_dict(sd["model"])
        except Exception as e:   # truncated or garbled: the selection cannot be trusted, the run is redone
            quarantine(d / "best.pt")
            if (d / "ckpt").exists():
                quarantine(d / "ckpt")
            raise CorruptFile(d / "best.pt", f"unreadable ({type(e).__name__}); moved aside with ckpt/",
                              "re-run: the run trains again from scratch") from None
        best["step"] = sd["step"]
    atomic_torch_save({"model": final.state_dict(), "step": tr.step}, d / "final.pt")
    collapse_step = next((r["step"] for r in tr.log if r.get("collapsed")), None)
    record = {"key": key, "label": label or spec.label, "steps": tr.step, "collapsed": tr.collapsed,
              "collapse_step": collapse_step, "best_step": best["step"], "accum": accum,
              # [step, PSNR, SSIM] of this session's selection evaluations, and the rule that chose among them
              "selection": {"rule": select.get("rule", "psnr"), "evaluations": best["history"]} if select else None,
              "precision": ran, "precision_asked": spec.precision, "seconds_this_session": round(time.time() - t0, 1),
              "finished": _dt.datetime.now().isoformat(timespec="seconds"), "code": code_version(),
              "env": environment(device)}
    atomic_write_text(d / "done.json", json.dumps(record, indent=1))
    shutil.rmtree(d / "ckpt", ignore_errors=True)   # finished runs keep only their final weights
    (d / "best.pt").unlink(missing_ok=True)
    return final


def improves(rule: str, kept: tuple[float, float] | None, psnr: float, ssim: float) -> bool:
    """Whether an evaluation (mean test PSNR, mean SSIM) replaces the kept checkpoint, whose scores are ``kept``
    (``None``: nothing kept yet). Rules (:data:`irlib.engine.spec.SELECT_RULES`): ``"psnr"``, a higher PSNR
    (EDSR-PyTorch's ``model_best.pt``, DehazeFormer's, DiffLoss's); ``"psnr_and_ssim"``, a higher PSNR *and* a
    higher SSIM than the kept checkpoint's (FFA-Net's net/main.py: it saves only when both exceed their
    maxima, and updates both maxima only then). NaN scores never improve."""
    if rule not in SELECT_RULES:
        raise ValueError(f"unknown selection rule {rule!r}; known: {', '.join(SELECT_RULES)}")
    if kept is None:
        return psnr == psnr and (rule == "psnr" or ssim == ssim)
    if rule == "psnr":
        return psnr > kept[0]
    return psnr > kept[0] and ssim > kept[1]


def pick(rule: str, scores: Sequence[tuple[float, float]]) -> int | None:
    """The index of the evaluation whose checkpoint ``rule`` keeps at the end, from the (PSNR, SSIM) of
    successive evaluations; ``None`` when none qualifies (the final weights are kept)."""
    kept, at = None, None
    for i, (p, s) in enumerate(scores):
        if improves(rule, kept, p, s):
            kept, at = (p, s), i
    return at


def select_eval(spec: RunSpec) -> EvalSpec:
    """The evaluation a run's checkpoint selection measures: the selection's own convention where the plan gives
    one (``select["eval"]``), else the test set's default (RGB, whole image, full-size SSIM)."""
    sel = dict(spec.select)
    return sel.get("eval") or EvalSpec(sel["on"])


def _kept_scores(path: Path) -> tuple[float, float] | None:
    """(PSNR, SSIM) of an earlier session's kept checkpoint, or ``None`` (none, or unreadable: it is replaced)."""
    import torch

    if not path.is_file():
        return None
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
        return (float(sd["psnr"]), float(sd["ssim"])) if "ssim" in sd else None
    except Exception:
        return None


def run_precision(asked: str, device: str) -> str:
    """The arithmetic a run asking for ``asked`` (``RunSpec.precision``) trains in on ``device``: ``"fp16"`` autocast
    with a GradScaler only on a CUDA device; elsewhere (the CPU rehearsal and tests) ``"fp32"``, since float16
    autocast on a CPU is slow where it is supported at all and its GradScaler is CUDA's. ``done.json`` records what
    ran (``precision``) next to what was asked (``precision_asked``), so a CPU run of an fp16 recipe says so."""
    if asked not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {asked!r}")
    return "fp16" if asked == "fp16" and str(device).startswith("cuda") else "fp32"


def build_trainer(sched, model, terms: dict, batches, device: str = "cpu", ckpt_dir=None, forward=None,
                  callback=None, progress: bool = True, accum: int = 1, amp: str | None = None):
    """The :class:`irlib.train.Trainer` of one run, following its schedule: optimiser, betas, weight decay,
    learning-rate decay, EMA, gradient clipping; checkpoints every quarter of the run (at most every 2,000
    steps) and at least every 10 minutes, so a preempted job loses little. ``accum``: each step's batch in that
    many micro-batches (the job's recorded factor, ``irlib reproduce --gpu``): same effective batch and schedule.
    ``amp``: the Trainer's autocast (``"fp16"`` with a GradScaler; see :func:`run_precision`)."""
    from ..train import Trainer

    return Trainer(model, batches, terms, lr=sched.lr, weight_decay=sched.weight_decay, betas=tuple(sched.betas),
                   optimizer=sched.optimizer, grad_clip=sched.grad_clip, ema_decay=sched.ema, device=device,
                   ckpt_dir=ckpt_dir, ckpt_every=max(1, min(2000, sched.steps // 4)) if ckpt_dir else 0,
                   ckpt_seconds=600, forward=forward, on_collapse="stop", progress=progress,
                   scheduler=sched.scheduler if sched.decay != "none" else None, callback=callback, accum=accum,
                   amp=amp)


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
        atomic_write_text(self.path, json.dumps({
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
    ctx = store.context(key)
    mod, fn = spec.fn.split(":")
    study_ctx = StudyContext(store=store, spec=spec, device=device, data_root=str(ctx.data_root),
                             fb=_feature_bank(spec, device, ctx), out=store.dir(key))
    rows = getattr(importlib.import_module(mod), fn)(study_ctx, **dict(spec.kw))
    atomic_write_text(store.dir(key) / "rows.csv", rows.to_csv(index=False))
    atomic_write_text(store.dir(key) / "done.json", json.dumps({
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
        return load_model(self.store, run, self.fb, self.device)
