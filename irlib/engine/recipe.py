"""A run's recipe as data: every dimension that decides what a training run computes and how it is measured,
stated explicitly (no code default left implicit), so it can be compared with the release that produced the
paper's number (``tests/fixtures/recipes/<context>.json``, ``tests/test_recipes.py``) and listed by
``irlib plan --runs --format csv``.

Dimensions (:data:`DIMENSIONS`): optimiser (``optimizer``, ``betas``, ``eps``, ``weight_decay``, ``momentum``),
learning rate (``lr``, ``lr_schedule``: the decay with its milestones/period/floor in scheduler ticks,
``lr_tick``: optimiser steps per scheduler step, ``warmup``), ``steps``, ``total_batch`` (over all GPUs),
``patch`` (ground-truth side), ``train_crop`` (``random`` windows, or ``resize_center``: the short side resized
to the patch and centre-cropped), ``augment`` (the dihedral orientations a training patch may get), ``synth`` (how
synthetic degradations are stored, and their seed rule), ``rec_loss`` (the network's own reconstruction loss
with the value range it sees), ``extra_terms`` (the method's terms: SPN, DiffLoss, ...), ``ema``,
``grad_clip``, ``precision``, ``select`` (which weights are kept), and the evaluation convention
(``eval_channel``, ``eval_crop``, ``eval_quantize``, ``eval_ssim``, ``eval_tiles``, ``eval_forward``,
``eval_self_ensemble``, ``eval_subset``: all test images or the first N, ``eval_resize``: 0 or the side both test
images are squared to first).
"""
from __future__ import annotations

import re
from typing import Any, Iterable, Sequence

from .spec import SELECT_RULES, EvalSpec, RunSpec, Source

DIMENSIONS = ("optimizer", "betas", "eps", "weight_decay", "momentum", "lr", "lr_schedule", "lr_tick", "warmup",
              "steps", "total_batch", "patch", "train_crop", "augment", "synth", "rec_loss", "extra_terms", "ema", "grad_clip",
              "precision", "select", "eval_channel", "eval_crop", "eval_quantize", "eval_ssim", "eval_tiles",
              "eval_forward", "eval_self_ensemble", "eval_subset", "eval_resize")

#: The value range each loss term sees (the trainer's images are in [0, 1]).
TERM_RANGE = {"l1": "[0,1]", "mse": "[0,1]", "neg_ssim": "[0,1]", "psnr": "[0,1]", "mse_pm1": "[-1,1]", "l1_pm1": "[-1,1]", "cross_entropy": "logits",
              "spn": "VGG features of [0,1] images", "cr": "VGG19 features of [0,1] images",
              "pcl": "Haar details / BN discriminator of [0,1] images", "perceptual": "VGG16 features of [0,1] images",
              "adversarial": "[0,1]", "diffloss": "ADM UNet on [-1,1] images", "dpc": "DINOv2 features of [0,1] images",
              "airnet_contrast": "MoCo logits of two crops"}

EPS = 1e-8          # irlib.train.Trainer: torch Adam/AdamW default eps
#: RunSpec.precision as the recipe names it (fp16: autocast with a GradScaler, on CUDA; see irlib.engine.jobs.run_precision)
PRECISION_NAMES = {"fp32": "fp32", "fp16": "fp16 autocast"}


def _paired(dataset: str) -> bool:
    """Whether a data reference holds real (lq, gt) pairs (the offline photos and clean splits do not)."""
    if dataset == "offline":
        return False
    from ..data.splits import get_split

    try:
        return bool(get_split(dataset).paired)
    except Exception:   # an unknown reference: reported as clean (synthesised) data
        return False


def augment_of(spec: RunSpec) -> str:
    """The augmentation a run's patches get, resolved (``""`` is irlib's original per-source rule)."""
    if spec.augment:
        return spec.augment
    kinds = sorted({"hflip" if _paired(s.dataset) else "flips" for s in spec.train})
    return "|".join(kinds)


def synth_of(spec: RunSpec) -> str:
    """How synthetic degradations are stored: ``float``/``uint8`` per synthesised source, ``real pairs`` otherwise;
    the seed rule is fixed (each batch a pure function of (seed, step))."""
    out = []
    for s in spec.train:
        out.append("real pairs" if _paired(s.dataset) else ("uint8" if s.synth == "uint8" else "float"))
    return "|".join(sorted(set(out)))


def _lr_schedule(spec: RunSpec) -> str:
    s = spec.schedule
    if s.decay == "none":
        return "constant"
    if s.decay == "step":
        return f"step milestones={list(s.milestones)} gamma={s.gamma:g}"
    if s.decay == "cosine":
        return (f"cosine T={s.t_max if s.t_max is not None else 'run'} eta_min={s.eta_min:g}"
                + (f" first_tick={s.tick_offset}" if s.tick_offset else ""))
    if s.decay == "warmup_cosine":
        return f"warmup_cosine warmup={s.warmup} T={s.t_max} eta_min={s.eta_min:g}"
    if s.decay == "piecewise":
        return "piecewise " + "; ".join(f"from {a}: {lr:g} x{g:g} per {e}" for a, lr, g, e in s.segments)
    return (f"cosine_restarts periods={list(s.periods)} weights={list(s.restart_weights)} "
            f"eta_mins={[float(x) for x in s.eta_mins]}")


def _term(name: str, weight: float, kw: tuple = ()) -> str:
    r = TERM_RANGE.get(name, "")
    k = dict(kw)
    window = "".join(f" {w} step {k[w]}" for w in ("from", "until") if w in k)
    window += f" then {float(k['then']):g}" if "then" in k else ""
    return f"{weight:g}*{name}{r if r.startswith('[') or not r else f' ({r})'}{window}"


def _select(spec: RunSpec) -> str:
    sel = dict(spec.select)
    if not sel:
        return "final"
    on = sel.get("on")
    what = SELECT_RULES[sel.get("rule", "psnr")]
    ev = sel.get("eval")
    how = f" ({ev.channel}, crop {ev.crop}{', 8-bit' if ev.quantize else ''})" if ev is not None else ""
    subset = (f" first {on.limit}" if getattr(on, "limit", None) else "") + (
        f" resized {on.resize}" if getattr(on, "resize", 0) else "")
    return f"best {what} every {int(sel['best_every'])} steps on {getattr(on, 'dataset', on)}{subset}{how}"


def _one(values: Iterable[Any]) -> Any:
    vals = []
    for v in values:
        if v not in vals:
            vals.append(v)
    return vals[0] if len(vals) == 1 else (vals or None)


def recipe(spec: RunSpec, evals: Sequence[EvalSpec] = ()) -> dict[str, Any]:
    """Every recipe dimension of ``spec`` (and of the evaluations the plan asks of it), as plain JSON values.
    An evaluation dimension with several values over ``evals`` is a list of them; with no evaluation, ``None``."""
    s = spec.schedule
    rec = next((t for t in spec.terms if t.name == s.rec), None)
    extra = [_term(t.name, t.weight, t.kw) for t in spec.terms if t is not rec]
    out: dict[str, Any] = {
        "optimizer": s.optimizer, "betas": [float(b) for b in s.betas], "eps": EPS,
        "weight_decay": float(s.weight_decay), "momentum": float(s.momentum), "lr": float(s.lr),
        "lr_schedule": _lr_schedule(spec), "lr_tick": int(s.tick), "warmup": int(s.warmup), "steps": int(s.steps),
        "total_batch": int(s.batch), "patch": int(s.patch), "train_crop": spec.crop or "random",
        "augment": augment_of(spec), "synth": synth_of(spec),
        "rec_loss": _term(rec.name, rec.weight, rec.kw) if rec is not None else None,
        "extra_terms": " + ".join(extra) if extra else "none",
        "ema": s.ema, "grad_clip": s.grad_clip, "precision": PRECISION_NAMES[spec.precision], "select": _select(spec),
        "eval_channel": _one(e.channel for e in evals), "eval_crop": _one(int(e.crop) for e in evals),
        "eval_quantize": _one(bool(e.quantize) for e in evals), "eval_ssim": _one(e.ssim or "full" for e in evals),
        "eval_tiles": _one(f"{e.tile}/{e.overlap}" if e.tile else "whole" for e in evals),
        "eval_forward": _one(e.forward or "plain" for e in evals),
        "eval_self_ensemble": _one(False for _ in evals),
        "eval_subset": _one(f"first {e.testset.limit}" if e.testset.limit else "all" for e in evals),
        "eval_resize": _one(int(e.testset.resize) for e in evals),
    }
    assert tuple(out) == DIMENSIONS
    return out


def compared(release: dict[str, Any], evals: Sequence[EvalSpec]) -> list[str]:
    """The dimensions of ``release`` a run is compared on: all of them, less the evaluation convention for a
    run the plan never evaluates itself (a study measures it, e.g. DiffLoss's Fig. 7 sweep)."""
    return [k for k in release if evals or not k.startswith("eval_")]


def differences(spec: RunSpec, evals: Sequence[EvalSpec], release: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{dimension: (irlib's value, the release's value)}`` for every compared dimension (:func:`compared`) of
    ``release`` (a fixture's ``{dimension: value}``) that the run's recipe does not match."""
    mine = recipe(spec, evals)
    return {k: (mine.get(k), release[k]) for k in compared(release, evals) if _norm(mine.get(k)) != _norm(release[k])}


def _norm(v: Any) -> Any:
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, (list, tuple)):
        return [_norm(x) for x in v]
    return v


def recipe_columns(costs, runs: Sequence[RunSpec], plans: Sequence = ()) -> "Any":
    """``costs`` (a DataFrame with a ``key`` column, e.g. :func:`irlib.engine.cost.run_costs`) with one column
    per recipe dimension and ``declared`` (the plan's stated departures from the release), for ``irlib plan
    --runs``. ``plans`` supply the evaluations each run gets."""
    import pandas as pd

    evals: dict[str, list[EvalSpec]] = {}
    for p in plans:
        for k, lst in p.evals().items():
            evals.setdefault(k, []).extend(e for e in lst if e not in evals.get(k, []))
    rows = []
    for r in runs:
        rec = recipe(r, evals.get(r.key(), ()))
        rows.append({"key": r.key(), **{k: (v if not isinstance(v, list) else "; ".join(map(str, v)))
                                        for k, v in rec.items()},
                     "declared": "; ".join(f"{k}: {why}" for k, why in r.declared)})
    extra = pd.DataFrame(rows)
    extra = extra[[c for c in extra.columns if c == "key" or c not in costs.columns]]   # costs' own columns win
    return costs.merge(extra, on="key", how="left")


def matches(spec: RunSpec, match: dict[str, Any]) -> bool:
    """Whether ``spec`` belongs to a fixture's context: ``paper``, ``net``, ``train`` (the training data
    references, as a set), ``net_kw`` (a subset of the run's) and ``label`` (a regular expression the run's label
    must contain a match of: it parts runs on the same data that belong to different settings) as given."""
    if "paper" in match and spec.paper != match["paper"]:
        return False
    if "label" in match and not re.search(match["label"], spec.label):
        return False
    if "net" in match and spec.net != match["net"]:
        return False
    if "train" in match and {s.dataset for s in spec.train} != set(match["train"]):
        return False
    kw = dict(spec.net_kw)
    return all(kw.get(k) == v for k, v in match.get("net_kw", {}).items())


__all__ = ["DIMENSIONS", "recipe", "differences", "recipe_columns", "matches", "augment_of", "synth_of", "Source"]
