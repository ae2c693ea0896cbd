"""Turning specs into objects: the network, its loss terms, its training batches, its test pairs, and the
evaluation of a trained network under a field's metric convention."""
from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import pandas as pd
import torch

from ..data import DatasetError, PairedPatches, PatchBatches, make_test_pairs, split_samples
from ..data.degrade import degrade
from ..data.splits import get_split, load_split
from ..models import zoo
from ..schedules import Schedule
from .features import FeatureBank
from .spec import EvalSpec, RunSpec, Source, Term, TestSet

OFFLINE = "offline"          # data reference of the offline photo set (smoke profile)
OFFLINE_SIDE = 64            # smoke images are 64x64 crops of the offline photos


# ------------------------------------------------------------------------------------------ schedule
def effective_schedule(spec: RunSpec) -> Schedule:
    """The run's schedule with the rehearsal caps applied (steps, batch, patch; never below the network's
    smallest admissible patch)."""
    s, lim = spec.schedule, spec.limits
    if lim is None:
        return s
    patch = max(min(s.patch, lim.patch), zoo.entry(spec.net).min_patch)
    return dataclasses.replace(s, steps=min(s.steps, lim.steps), batch=min(s.batch, lim.batch), patch=patch)


# ------------------------------------------------------------------------------------------ data
class MixedBatches:
    """Batches from several sources: in turn, or — with ``weights`` — each step's source drawn with those
    shares, as a pure function of (seed, step) so a resumed run sees the same sequence."""

    def __init__(self, sources: Sequence[Callable[[int], dict]], weights: Sequence[float] | None = None, seed: int = 0):
        self.sources = list(sources)
        if weights is not None:
            w = torch.tensor([float(x) for x in weights])
            if len(w) != len(self.sources) or (w < 0).any() or w.sum() <= 0:
                raise ValueError(f"need one non-negative weight per source, got {list(weights)}")
            weights = (w.cumsum(0) / w.sum()).tolist()
        self.cum, self.seed = weights, seed

    def __call__(self, step: int) -> dict:
        if self.cum is None:
            return self.sources[step % len(self.sources)](step // len(self.sources))
        from ..data.datasets import _step_generator

        u = float(torch.rand((), generator=_step_generator(self.seed, step, 7919)))
        i = next(k for k, c in enumerate(self.cum) if u < c or k == len(self.cum) - 1)
        return self.sources[i](step)

    def __setattr__(self, name, value):  # seed/rank reach every source
        if name in ("seed", "rank") and "sources" in self.__dict__:
            for s in self.sources:
                setattr(s, name, value)
        super().__setattr__(name, value)


def _scale_of(task: str) -> int:
    return int(task[3:]) if task.startswith("srx") else 1


def training_batches(spec: RunSpec, data_root: str, sched: Schedule) -> Callable[[int], dict]:
    """Batches for ``spec``: real pairs of paired splits, clean images degraded on the fly otherwise, several
    sources mixed round-robin. Batches are pure functions of (seed, step), so a resumed run sees the same data.
    A clean-image source's task may list alternatives (``noise15|noise25|noise50``: each sample draws one), and
    consecutive clean-image sources with the same task are pooled into one image set (a combined dataset)."""
    sources, weights = [], []
    two = spec.forward == "airnet"   # AirNet's query and key: two crops of each degraded image
    for src in spec.train:
        s = _one_source(src, data_root, sched, spec.seed, spec.augment, two_crops=two, crop=spec.crop)
        prev = sources[-1] if sources else None
        if isinstance(s, PatchBatches) and isinstance(prev, PatchBatches) and tuple(prev.tasks) == tuple(s.tasks):
            prev.images = _Pooled([prev.images, s.images])   # consecutive clean sources of one task: one pooled
            if src.weight is not None:                       # set (e.g. BSD400 + WED, sampled uniformly)
                weights[-1] = (weights[-1] or 0.0) + src.weight
            continue
        sources.append(s)
        weights.append(src.weight)
    if len(sources) == 1:
        return sources[0]
    if any(w is None for w in weights) and any(w is not None for w in weights):
        raise ValueError(f"{spec.label or spec.net}: give every mixed training source a weight, or none")
    return MixedBatches(sources, None if weights[0] is None else weights, seed=spec.seed)


EAGER_LIMIT = 2000   # training sets up to this many images are decoded once into memory (uint8); larger ones lazily


def _one_source(src: Source, data_root: str, sched: Schedule, seed: int, augment: str = "", two_crops: bool = False,
                crop: str = ""):
    """Batches of one training source; ``crop="resize_center"`` squares every image to the patch side first
    (:class:`irlib.data.datasets.ResizedPairs`), so the patch is the whole squared image."""
    from ..data.datasets import ResizedPairs, resize_center
    from ..data.splits import LazyPairs, image_size, split_files, subset_files

    if src.dataset == OFFLINE:
        train, _ = split_samples(OFFLINE_SIDE, n_test=3)
        if crop == "resize_center":
            train = [resize_center(x, sched.patch) for x in train]
        return PatchBatches(train, sched.patch, sched.batch, tuple(src.task.split("|")), seed=seed,
                            augment=augment, synth=src.synth, two_crops=two_crops)
    sp = get_split(src.dataset)
    files = subset_files(split_files(data_root, src.dataset), src.subset)
    probe = files if len(files) <= EAGER_LIMIT else subset_files(files, 200, seed=1)
    small = [] if crop == "resize_center" else [   # squared images always fill the patch: nothing to read
        (p, hw) for _, p in probe for hw in [image_size(p)] if min(hw) < sched.patch]
    if small:
        raise DatasetError(f"{src.dataset}: training images are smaller than the {sched.patch}-pixel training patch "
                           f"(e.g. {small[0][0].name}: {small[0][1][1]}x{small[0][1][0]}); "
                           f"{len(small)} of {len(probe)} checked")
    if len(files) <= EAGER_LIMIT:
        data = load_split(data_root, src.dataset, dtype=torch.uint8, files=files)
    else:
        data = LazyPairs(files, src.dataset, sp.scale)
    if crop == "resize_center":
        data = ResizedPairs(data, sched.patch, sp.scale)
    if sp.paired:
        return PairedPatches(data, sched.patch, sched.batch, task=src.task, seed=seed, scale=sp.scale, augment=augment,
                             two_crops=two_crops)
    return PatchBatches(_GtOnly(data), sched.patch, sched.batch, tuple(src.task.split("|")), seed=seed,
                        augment=augment, synth=src.synth, two_crops=two_crops)


class _Pooled:
    """Several image sequences as one (indices run through them in order), without loading them."""

    def __init__(self, parts):
        self.parts = [p for q in parts for p in (q.parts if isinstance(q, _Pooled) else [q])]

    def __len__(self) -> int:
        return sum(len(p) for p in self.parts)

    def __getitem__(self, i: int):
        for p in self.parts:
            if i < len(p):
                return p[i]
            i -= len(p)
        raise IndexError(i)


class _GtOnly:
    """The ground-truth images of a clean split, as a sequence (eager or lazy underneath)."""

    def __init__(self, pairs):
        self.pairs = pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int):
        return self.pairs[i][1]


def test_pairs(ts: TestSet, data_root: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Float (lq, gt) pairs of a test set: the split's real pairs (``task`` is then only a label), or its clean
    images degraded by ``task`` with the test set's seed (SR: cropped to a multiple of the scale first)."""
    from ..data.datasets import resize_center

    def squared(x: torch.Tensor) -> torch.Tensor:
        return resize_center(x, ts.resize) if ts.resize else x

    if ts.dataset == OFFLINE:
        _, test = split_samples(OFFLINE_SIDE, n_test=3)
        return make_test_pairs([squared(x) for x in test[: ts.limit]], ts.task or "noise25", ts.seed, synth=ts.synth)
    sp = get_split(ts.dataset)
    data = load_split(data_root, ts.dataset, limit=ts.limit)
    if sp.paired:  # real pairs: ``task`` only labels them (TextPromptIR's instruction)
        if ts.resize and sp.scale != 1:
            raise ValueError(f"{ts.dataset}: a resized test set needs same-size pairs (scale {sp.scale})")
        return [(squared(lq), squared(gt)) for lq, gt in data]
    if not ts.task:
        raise ValueError(f"{ts.dataset} holds clean images only: give the degradation task to test on")
    s = _scale_of(ts.task)
    imgs = [g[:, : g.shape[1] // s * s, : g.shape[2] // s * s] for g in (squared(gt) for _, gt in data)]
    return make_test_pairs(imgs, ts.task, ts.seed, synth=ts.synth)


def apply_task(x: torch.Tensor, task: str, seed: int) -> torch.Tensor:
    """One seeded degradation of a (C,H,W) image (used by figures and studies)."""
    return degrade(x[None], task, seed)[0]


# ------------------------------------------------------------------------------------------ networks
def build_model(spec: RunSpec, fb: FeatureBank) -> torch.nn.Module:
    kw = dict(spec.net_kw)
    if spec.net == "TextPromptIR" and kw.get("use_text", True):
        kw["text_dim"] = fb.text_dim(spec.text_encoder)
    return zoo.create(spec.net, size=spec.size, features=fb, **kw)


def build_terms(spec: RunSpec, model: torch.nn.Module, fb: FeatureBank,
                load_run: Callable[[RunSpec], torch.nn.Module]) -> dict:
    """Trainer ``loss_terms`` ``{name: (weight, fn)}`` for the spec's terms. ``load_run`` gives the trained
    network of a dependency run (a frozen pre-trained negative model)."""
    from .. import losses

    out = {}
    for t in spec.terms:
        out[t.name] = (term_weight(t, spec), _term(t, spec, model, fb, load_run, losses))
    return out


PHASE_KW = ("from", "until", "then")


def term_weight(t: Term, spec: RunSpec):
    """The trainer weight of term ``t``: ``t.weight``, or a :class:`irlib.train.StepWeight` when the term has a
    step window: kwargs ``("from", N)`` (off before step N), ``("until", N)`` (``t.weight`` before step N, then
    ``("then", w)`` or off). N counts steps of the planned schedule; under the rehearsal's step cap the window
    shrinks in proportion (rounded up), so a capped run still passes every phase."""
    kw = dict(t.kw)
    if "from" not in kw and "until" not in kw:
        if "then" in kw:
            raise ValueError(f"term {t.name}: 'then' needs 'until'")
        return t.weight
    from ..train import StepWeight

    planned, capped = spec.schedule.steps, effective_schedule(spec).steps

    def at(n: int) -> int:
        return -(-int(n) * capped // planned) if capped < planned else int(n)

    stop = at(kw["until"]) if "until" in kw else None
    then = kw.get("then")
    return StepWeight.window(t.weight, at(kw.get("from", 0)), stop, None if then is None else float(then))


#: SPN history copies a rehearsal run keeps (the first of its term's steps): in two steps no copy is ever updated,
#: so the others would repeat the same forward passes (the costliest part of the rehearsal's IDT+SPN runs)
REHEARSE_HISTORY = 1


def _term(t: Term, spec: RunSpec, model, fb: FeatureBank, load_run, losses):
    if t.name in losses.LOSSES:
        return losses.LOSSES[t.name]
    if t.name == "spn":
        from .. import spn

        base = spn.PUBLIC_CODE if t.get("preset") == "public_code" else spn.PAPER
        cfg = dataclasses.replace(base, **{k: v for k, v in t.kw if k in ("lam", "steps", "w")})
        if spec.limits is not None:   # rehearsal: one history copy runs the same code at a quarter of the cost
            cfg = dataclasses.replace(cfg, steps=tuple(cfg.steps)[:REHEARSE_HISTORY])
        negative = t.get("negative", "history")
        frozen = None
        if negative == "pretrained":
            frozen = load_run(t.get("negative_run"))
        elif negative == "random":
            torch.manual_seed(int(t.get("negative_seed", 99)))
            frozen = build_model(spec, fb)
        fresh = (lambda: build_model(spec, fb)) if cfg.init == "release" else None   # the network's own init
        return spn.SPNLoss(model, cfg, embed=fb.vgg(cfg.arch, cfg.layers), negative=negative, frozen_negative=frozen,
                           fresh=fresh, seed=spec.seed)
    if t.name == "cr":
        return losses.ContrastiveRegularization(fb.vgg("vgg19"))
    if t.name == "pcl":
        return losses.PCLLoss(scale=int(t.get("scale", 4)), seed=spec.seed)
    if t.name == "perceptual":
        return losses.PerceptualLoss(fb.vgg("vgg16", ("relu1_2", "relu2_2", "relu3_3")))
    if t.name == "adversarial":
        return losses.AdversarialLoss()
    if t.name == "diffloss":
        from ..diffloss import DiffLoss

        size = t.get("size")
        if spec.limits is not None:  # rehearsal: at most the caps' side; a term may ask for less (cost)
            size = min(int(size or spec.limits.image_side), spec.limits.image_side)
        return DiffLoss(fb.adm(), lam=float(t.get("lam", 0.01)), target=t.get("target", "eps"), size=size,
                        path=t.get("path", "split"), detach_restored=bool(t.get("detach_restored", False)))
    if t.name == "dpc":
        from ..dinoir import DPCLoss

        return DPCLoss(fb.dino(t.get("layers")))
    raise KeyError(f"unknown loss term {t.name!r}")


def train_forward(spec: RunSpec, fb: FeatureBank) -> Callable | None:
    """The trainer's ``forward(model, batch)``: TextPromptIR draws one training instruction per sample; AirNet
    (``forward="airnet"``) runs its release's two stages (:func:`irlib.models.airnet.training_forward`)."""
    if spec.forward == "text":
        from ..textprompt import text_forward

        return text_forward(fb.text(spec.text_encoder), "train", spec.seed)
    if spec.forward == "airnet":   # query/key crops, encoder alone while only the contrastive term is on
        from ..models.airnet import training_forward

        return training_forward
    return None


def eval_forward(spec: RunSpec, ev: EvalSpec, fb: FeatureBank) -> Callable | None:
    """``forward(model, batch)`` for evaluation: held-out instructions for TextPromptIR (the test set's task),
    NAFNet's test-time local converter for ``forward='tlc'``."""
    if spec.forward == "text":
        from ..textprompt import text_forward

        enc, task = fb.text(spec.text_encoder), ev.testset.task or ev.forward.removeprefix("text:")
        fwd = text_forward(enc, "test", ev.testset.seed)
        return lambda m, b: fwd(m, {**b, "task": [task] * b["lq"].shape[0]})
    if ev.forward == "tlc":
        from ..models import nafnet

        if not hasattr(nafnet, "tlc_forward"):
            raise NotImplementedError("NAFNet test-time local converter is not available in irlib.models.nafnet")
        return nafnet.tlc_forward
    return None


# ------------------------------------------------------------------------------------------ evaluation
@torch.no_grad()
def evaluate_run(model: torch.nn.Module, spec: RunSpec, ev: EvalSpec, pairs, fb: FeatureBank,
                 device: str = "cpu") -> dict:
    """Per-image metrics of ``model`` on ``pairs`` under ``ev``'s convention, plus dataset-level ones (FID).
    Returns ``{"per_image": {metric: [..]}, "dataset": {metric: value}, "n": N}``."""
    from ..metrics import frechet_distance, inception_features, lpips
    from ..train import padded_forward

    model.eval().to(device)
    fwd = eval_forward(spec, ev, fb)
    pad = zoo.pad(spec.net, spec.size)
    per: dict[str, list[float]] = {m: [] for m in ev.metrics if m in ("PSNR", "SSIM", "LPIPS")}
    outs, gts = [], []
    for k, (lq, gt) in enumerate(pairs):
        run = (lambda x, k=k: fwd(model, {"lq": x, "index": k})) if fwd else model
        if ev.tile:
            y = tiled_forward(lambda x, run=run: padded_forward(run, x, pad), lq[None].to(device), ev.tile,
                              ev.overlap).clamp(0, 1).float().cpu()
        else:
            y = padded_forward(run, lq[None].to(device), pad, gt.shape[-2:]).clamp(0, 1).float().cpu()
        m = measure_under(ev, y, gt[None])
        for name in ("PSNR", "SSIM"):
            if name in per:
                per[name].append(float(m[name][0]))
        if "LPIPS" in per:
            per["LPIPS"].append(float(lpips(y, gt[None], pretrained=fb.pretrained)[0]))
        if "FID" in ev.metrics:
            outs.append(y[0])
            gts.append(gt)
    dataset = {}
    if "FID" in ev.metrics:
        side = min(min(x.shape[-2:]) for x in gts)
        crop = lambda xs: torch.stack([x[:, :side, :side] for x in xs])  # noqa: E731
        dataset["FID"] = frechet_distance(inception_features(crop(outs), fb.pretrained),
                                          inception_features(crop(gts), fb.pretrained))
    return {"per_image": per, "dataset": dataset, "n": len(pairs)}


def measure_under(ev: EvalSpec, y: torch.Tensor, gt: torch.Tensor) -> dict[str, torch.Tensor]:
    """PSNR/SSIM of output ``y`` against ``gt`` (B, C, H, W in [0, 1]) under ``ev``'s convention: 8-bit
    quantised output when ``ev.quantize``; SSIM on DehazeFormer's average-pooled images (``ev.ssim="dehazeformer"``)
    or scikit-image's default uniform-window SSIM (``"skimage"``, PromptIR/TextPromptIR's test code)."""
    from ..metrics import psnr, ssim, ssim_uniform

    if ev.ssim not in ("", "dehazeformer", "skimage"):
        raise ValueError(f"unknown SSIM convention {ev.ssim!r}")
    if ev.quantize:
        y = (y.clamp(0, 1) * 255.0).round() / 255.0
    kw = dict(channel=ev.channel, crop_border=ev.crop)
    out = {"PSNR": psnr(y, gt, **kw)}
    if ev.ssim == "dehazeformer":
        y, gt = dehazeformer_ssim_inputs(y, gt)
    if ev.ssim == "skimage":
        if ev.channel != "rgb" or ev.crop:
            raise ValueError("ssim='skimage' is defined on uncropped RGB images")
        out["SSIM"] = ssim_uniform(y, gt)
    else:
        out["SSIM"] = ssim(y, gt, **kw)
    return out


def dehazeformer_ssim_inputs(y: torch.Tensor, gt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """DehazeFormer's test.py measures SSIM after ``F.adaptive_avg_pool2d`` to ``(int(H / r), int(W / r))`` with
    ``r = max(1, round(min(H, W) / 256))`` (about half size on SOTS's 460x620 frames)."""
    h, w = y.shape[-2:]
    r = max(1, round(min(h, w) / 256))
    size = (int(h / r), int(w / r))
    pool = torch.nn.functional.adaptive_avg_pool2d
    return pool(y, size), pool(gt, size)


def tile_starts(n: int, tile: int, overlap: int) -> list[int]:
    """Window origins along one axis of length ``n``: every ``tile - overlap`` pixels, the last window flush
    with the end (IDT's ``splitimage``); one window at 0 when the axis is no longer than ``tile``."""
    if n <= tile:
        return [0]
    starts = list(range(0, n, tile - overlap))
    while starts[-1] + tile >= n:
        starts.pop()
    return starts + [n - tile]


def tile_score(tile: int) -> torch.Tensor:
    """IDT's merge weights: ``1 / sqrt((h - tile/2)^2 + (w - tile/2)^2 + 1e-3)`` over a window."""
    r = torch.arange(tile, dtype=torch.float32) - tile / 2
    return 1.0 / torch.sqrt(r[:, None] ** 2 + r[None, :] ** 2 + 1e-3)


def tiled_forward(run: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, tile: int, overlap: int) -> torch.Tensor:
    """``run`` applied to overlapping ``tile``-pixel windows of ``x`` (B, C, H, W), merged with the
    :func:`tile_score` weights (IDT's full-size test). A side shorter than ``tile`` is one window of the whole
    side (the network pads it)."""
    b, _, h, w = x.shape
    th, tw = min(tile, h), min(tile, w)
    hs, ws = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
    score = tile_score(tile)[:th, :tw].to(x.device)
    out = tot = None
    for i in hs:
        for j in ws:
            y = run(x[..., i:i + th, j:j + tw])
            if out is None:
                out = torch.zeros(b, y.shape[1], h, w, device=x.device, dtype=y.dtype)
                tot = torch.zeros(1, 1, h, w, device=x.device, dtype=y.dtype)
            out[..., i:i + th, j:j + tw] += score * y
            tot[..., i:i + th, j:j + tw] += score
    return out / tot


def metric_frame(result: dict) -> pd.DataFrame:
    return pd.DataFrame(result["per_image"])
