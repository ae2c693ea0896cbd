"""FLOPs and peak memory of one training step (and one evaluation forward) of a run, counted without computing.

The run's network, loss terms (with their frozen feature networks: VGG, DINOv2, the 552M ADM UNet) and trainer
(optimiser, EMA) are built exactly as :mod:`irlib.engine.jobs` builds them, but under PyTorch's
``FakeTensorMode``: every tensor has a shape, dtype and storage size and no data, so a paper-scale step of any
run traces in seconds on a CPU. Feature networks get random weights (the architecture, and so the cost, is the
same; pretrained files are never read). TextPromptIR's text encoder caches one vector per instruction, so in the
steady state it costs nothing per step; the trace feeds the network a (batch, text_dim) embedding instead.

* FLOPs: :class:`torch.utils.flop_counter.FlopCounterMode` over forward, loss terms, backward and optimiser step
  (matmuls and convolutions; element-wise ops are not counted, as in every FLOP counter).
* Memory: ``torch.distributed._tools.mem_tracker.MemTracker``, which follows every tensor storage's lifetime
  (weak references to storages) and reports the peak of live bytes by kind: parameters, buffers, gradients,
  optimiser state, activations, temporaries. The step is traced in its steady state: gradients of the previous
  step and the Adam moments exist before the forward (the trainer clears gradients only after the forward).
  Allocator fragmentation and cuDNN/cuBLAS workspaces are not included (see :data:`ALLOCATOR_OVERHEAD`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import weakref
from typing import Any

import torch
import torch.utils._pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

from .features import FeatureBank
from .spec import RunSpec

TEXT_DIM = {"": 384}         # text encoder width: the offline MiniLM; BERT-base (every hub / task-bert one) 768
BERT_BASE_DIM = 768

# Largest test image (height, width) per test split: upper bounds from the datasets' public descriptions (the
# sizes are not in the manifests). Evaluation runs whole images, so this decides whether evaluation fits.
TEST_SIZES: dict[str, tuple[int, int]] = {
    "cbsd68": (321, 481), "rain100h": (321, 481), "rain100l": (321, 481), "rain200h": (321, 481),
    "rain200l": (321, 481), "ddn": (512, 512), "did": (512, 512), "spa": (512, 512), "lol": (400, 600),
    "gopro": (720, 1280), "dense_haze": (1200, 1600), "nh_haze": (1200, 1600), "reside_6k": (460, 620),
    "reside_sots": (460, 620), "manga109": (1170, 827), "sr_benchmark": (1024, 1024), "div2k": (1404, 2040),
}


class _TextStub:
    """A text encoder that returns (n, dim) zeros: the cached sentence vectors of the real encoder."""

    def __init__(self, dim: int):
        self.dim = dim

    def encode(self, sentences) -> torch.Tensor:
        return torch.zeros(len(sentences), self.dim)


class TraceFeatureBank(FeatureBank):
    """A :class:`FeatureBank` whose networks are random (nothing read from disk) and private to one trace, so
    fake networks never enter the process-wide cache."""

    def __init__(self, size: str = "full"):
        super().__init__(weights="random", size=size, device="cpu")
        self._own: dict[tuple, Any] = {}

    def _get(self, key: tuple, make) -> Any:
        if key not in self._own:
            self._own[key] = make()
        return self._own[key]

    def text(self, name: str = ""):
        return _TextStub(self.text_dim(name))

    def text_dim(self, name: str = "") -> int:
        return TEXT_DIM.get(name, BERT_BASE_DIM)


def trace_signature(spec: RunSpec) -> RunSpec:
    """The parts of a run that decide its per-step cost (seed, step count, data and model selection do not). The
    trace runs on the meta device in float32 whatever ``precision`` the run asks for (an fp16 run's FLOPs are the
    same; its traced memory an upper bound), so precision is left out too."""
    from ..schedules import Schedule

    sched = spec.schedule
    return dataclasses.replace(spec, seed=0, train=(), select=(), label="", precision="fp32",
                               schedule=dataclasses.replace(sched, steps=1) if isinstance(sched, Schedule) else sched)


def lq_side(spec: RunSpec, patch: int) -> int:
    """The network input's side for a ground-truth patch (super-resolution networks see patch / scale)."""
    return patch // int(dict(spec.net_kw).get("scale") or 1)


def _batch(spec: RunSpec, batch: int, patch: int) -> dict:
    lq = lq_side(spec, patch)
    task = spec.train[0].task.split("|")[0] if spec.train else "noise25"
    out = {"lq": torch.rand(batch, 3, lq, lq), "gt": torch.rand(batch, 3, patch, patch), "task": [task] * batch,
           "index": 0}
    if spec.forward == "airnet":   # AirNet's key: a second crop of each degraded image (irlib.engine.runner)
        out["lq_key"] = torch.rand(batch, 3, lq, lq)
    return out


def build_step(spec: RunSpec, fb: FeatureBank, batch: int | None = None, patch: int | None = None):
    """(trainer, batch) of ``spec`` as the job builds them (network, loss terms, optimiser, EMA), with a batch of
    the schedule's size (or the given one). Call under ``FakeTensorMode`` to build nothing real."""
    from .jobs import build_trainer
    from .runner import build_model, build_terms, effective_schedule, train_forward

    sched = effective_schedule(spec)
    model = build_model(spec, fb)
    terms = build_terms(spec, model, fb, load_run=lambda r: build_model(r, fb).eval().requires_grad_(False))
    if torch.empty(()).device.type == "meta":   # tracing: tensors a network reads from files (RCD-Net's kernel) too
        for m in [model] + [x for _, fn in terms.values() for x in _modules(fn, {id(y) for y in model.modules()})]:
            _meta_tensors(m)
    tr = build_trainer(sched, model, terms, batches=None, device="cpu", forward=train_forward(spec, fb),
                       progress=False)
    return tr, _batch(spec, batch or sched.batch, patch or sched.patch)


class LiveMemory(TorchDispatchMode):
    """Peak of the bytes held by live tensor storages while active. Every storage an operator returns is
    counted once (views and in-place results share their input's storage) until its Python object is collected;
    storages that exist before (parameters, gradients, optimiser state) are registered with :meth:`hold`.
    Works on meta, fake and real tensors alike, since it reads only storage sizes."""

    def __init__(self) -> None:
        super().__init__()
        self._live: dict[int, int] = {}
        self.current = 0
        self.peak = 0
        self.allocated = 0      # bytes of every storage created while active (a proxy for memory traffic)

    def hold(self, t: torch.Tensor) -> None:
        st = t.untyped_storage()
        k = id(st)
        if k in self._live:
            return
        n = int(st.nbytes())
        self._live[k] = n
        self.current += n
        self.peak = max(self.peak, self.current)
        weakref.finalize(st, self._free, k)

    def _free(self, k: int) -> None:
        self.current -= self._live.pop(k, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor):
                before = self.current
                self.hold(t)
                self.allocated += self.current - before
        return out


def _meta_tensors(m: torch.nn.Module) -> None:
    """Replace a module's own real parameters and buffers with meta ones of the same shape (in place)."""
    for name, p in list(m._parameters.items()):
        if p is not None and p.device.type != "meta":
            m._parameters[name] = torch.nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
    for name, b in list(m._buffers.items()):
        if b is not None and b.device.type != "meta":
            m._buffers[name] = torch.empty_like(b, device="meta")


def steady_state(tr) -> None:
    """Gradients and Adam moments as they are after the first step (what every later step carries)."""
    for p in (p for g in tr.opt.param_groups for p in g["params"]):
        p.grad = torch.zeros_like(p)
        tr.opt.state[p].update(step=torch.tensor(1.0, device="cpu"), exp_avg=torch.zeros_like(p),
                               exp_avg_sq=torch.zeros_like(p))


def step(tr, batch: dict) -> torch.Tensor:
    """One training step in the trainer's order (forward, loss terms, clear gradients, backward, clip, optimiser,
    after-step hooks, EMA), without reading any value back (fake tensors have none)."""
    from ..train import weight_at

    tr.net.train()
    # a term switched on or off by step (AirNet's encoder-only stage): trace the run's last, fullest step
    weights = {k: weight_at(w, 1 << 62) for k, (w, _) in tr.loss_terms.items()}
    active = {k: (w, tr.loss_terms[k][1]) for k, w in weights.items() if w is not None}
    batch = {**batch, "active": tuple(active)}
    out = tr.forward(tr.net, batch) if tr.forward else tr.net(batch["lq"])
    out = [o.float() for o in out] if isinstance(out, (list, tuple)) else out.float()   # multi-stage (MPRNet)
    total = sum(w * fn(out, batch, tr.model) for w, fn in active.values())
    tr.opt.zero_grad(set_to_none=True)
    total.backward()
    if tr.grad_clip:
        torch.nn.utils.clip_grad_norm_(tr.model.parameters(), tr.grad_clip)
    tr.opt.step()
    for _, fn in tr.loss_terms.values():
        if hasattr(fn, "after_step"):
            fn.after_step(tr.model, 1)
    if tr.ema:
        tr.ema.update(tr.model)
    return total.detach()


def _gib(n: float) -> float:
    return float(n) / 2 ** 30


def _nbytes(ts) -> int:
    return sum(t.untyped_storage().nbytes() for t in {id(t): t for t in ts}.values())


def _modules(obj, seen: set | None = None) -> list[torch.nn.Module]:
    """Every module reachable from a loss term: its submodules and modules it keeps outside the module tree
    (DiffLoss holds the ADM UNet in a list so that it stays out of state dicts)."""
    seen = set() if seen is None else seen
    out = []
    items = obj.modules() if isinstance(obj, torch.nn.Module) else [obj]
    for m in items:
        if id(m) in seen:
            continue
        seen.add(id(m))
        if isinstance(m, torch.nn.Module):
            out.append(m)
        for v in vars(m).values():
            for x in (v if isinstance(v, (list, tuple)) else [v]):
                if isinstance(x, torch.nn.Module) and id(x) not in seen:
                    out.extend(_modules(x, seen))
    return out


def _term_modules(tr) -> list[torch.nn.Module]:
    seen = {id(m) for m in tr.model.modules()}
    return [m for _, fn in tr.loss_terms.values() for m in _modules(fn, seen)]


def _all_tensors(tr, batch: dict):
    mods = [tr.model] + _term_modules(tr)
    if tr.ema:
        mods.append(tr.ema.model)
    for m in mods:
        yield from m.parameters()
        yield from m.buffers()
    for st in tr.opt.state.values():
        yield from (v for v in st.values() if isinstance(v, torch.Tensor))
    yield from (p.grad for p in tr.model.parameters() if p.grad is not None)
    yield from (v for v in batch.values() if isinstance(v, torch.Tensor))


def measure_step(tr, batch: dict) -> dict:
    """FLOPs and the memory peak (GiB) of one :func:`step` in its steady state; works on meta, fake and real
    tensors. ``static`` parts: trained parameters, their gradients, Adam moments, the EMA copy, frozen networks."""
    from torch.utils.flop_counter import FlopCounterMode

    steady_state(tr)
    trained = [p for p in tr.model.parameters() if p.requires_grad]
    frozen = [t for m in _term_modules(tr) for t in (*m.parameters(recurse=False), *m.buffers(recurse=False))]
    mem = LiveMemory()
    for t in _all_tensors(tr, batch):
        mem.hold(t)
    start = mem.current
    fc = FlopCounterMode(display=False)
    with fc, mem:
        step(tr, batch)
    return {"flops": int(fc.get_total_flops()), "peak_gib": _gib(mem.peak), "static_gib": _gib(start),
            "allocated_gib": _gib(mem.allocated),
            "params_gib": _gib(_nbytes(trained)), "frozen_gib": _gib(_nbytes(frozen)),
            "params_trainable": sum(p.numel() for p in trained)}


def measure_eval(model: torch.nn.Module, spec: RunSpec, fb: FeatureBank, hw: tuple[int, int]) -> dict:
    """FLOPs and peak memory (GiB) of one whole-image evaluation forward (no gradients) of an ``hw`` test image."""
    from torch.utils.flop_counter import FlopCounterMode

    from ..models import zoo
    from .runner import train_forward

    s = int(dict(spec.net_kw).get("scale") or 1)
    p = zoo.pad(spec.net, spec.size)
    h, w = [-(-(x // s) // p) * p for x in hw]
    fwd = train_forward(spec, fb) if spec.forward != "airnet" else None   # AirNet restores from the image alone
    model.eval()
    mem = LiveMemory()
    for t in (*model.parameters(), *model.buffers()):
        mem.hold(t)
    fc = FlopCounterMode(display=False)
    with torch.no_grad(), fc, mem:
        x = torch.rand(1, 3, h, w)
        y = fwd(model, {"lq": x, "task": ["noise25"]}) if fwd else model(x)
        del x, y
    return {"eval_hw": [h, w], "eval_flops": int(fc.get_total_flops()), "eval_peak_gib": _gib(mem.peak)}


@contextlib.contextmanager
def _no_moves():
    """``Module.to`` as a no-op: everything is already on the (fake) CPU, and moving fake parameters would try to
    swap tensors that the trace holds weak references to."""
    orig = torch.nn.Module.to
    torch.nn.Module.to = lambda self, *a, **k: self
    try:
        yield
    finally:
        torch.nn.Module.to = orig


def trace_run(spec: RunSpec, test_hw: tuple[int, int] | None = None) -> dict:
    """Fake-tensor trace of ``spec``'s training step at its schedule's batch and patch, and of one evaluation
    forward at ``test_hw`` (the largest test image; skipped when None)."""
    torch.manual_seed(0)
    with torch.device("meta"), _no_moves():
        fb = TraceFeatureBank(spec.size)
        tr, batch = build_step(spec, fb)
        out = measure_step(tr, batch)
        if test_hw is not None:
            out.update(measure_eval(tr.eval_model(), spec, fb, test_hw))
    return out
