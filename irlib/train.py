"""One small trainer every paper notebook reuses.

* ``batches(step) -> dict`` supplies data; with :class:`irlib.data.PatchBatches` a batch is a pure
  function of (seed, step), so a resumed run sees exactly the batches an uninterrupted run would.
* ``loss_terms``: ``{name: (weight, fn)}`` with ``fn(out, batch, model) -> scalar``; ``weight`` may be a
  :class:`StepWeight` (a weight that changes, or a term that is switched off, at given steps: a term is not
  computed on steps where it is off, and the forward sees the names of the terms on in ``batch["active"]``).
  ``batch["step"]`` is the step. A term object
  may define ``after_step(model, step)`` (SPN's history models do) and ``state_dict``/``load_state_dict``
  (saved in checkpoints).
* AMP (``amp="bf16"|"fp16"|None``), gradient clipping, EMA of weights, atomic checkpoints every
  ``ckpt_every`` steps with resume, tqdm progress, non-finite-loss detection and a per-step pandas log.
* Under ``torchrun`` (``WORLD_SIZE>1``) the model is wrapped in DDP and every rank draws its own batches.
"""
from __future__ import annotations

import copy
import itertools
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

LossFn = Callable[[torch.Tensor, dict, torch.nn.Module], torch.Tensor]


@dataclass(frozen=True)
class StepWeight:
    """A loss term's weight as a function of the step: ``((from_step, weight), ...)`` with ``from_step`` increasing
    from 0; a ``weight`` of ``None`` switches the term off from that step (it is then not computed at all)."""

    pieces: tuple[tuple[int, float | None], ...]

    def __post_init__(self) -> None:
        starts = [int(a) for a, _ in self.pieces]
        if not starts or starts[0] != 0 or any(b <= a for a, b in itertools.pairwise(starts)):
            raise ValueError(f"StepWeight pieces need from_step strictly increasing from 0, got {self.pieces}")

    @classmethod
    def window(cls, weight: float, start: int = 0, stop: int | None = None, then: float | None = None) -> StepWeight:
        """``weight`` on steps ``[start, stop)``, off before ``start`` and ``then`` (default: off) from ``stop``."""
        pieces: list[tuple[int, float | None]] = [(0, None)] if start > 0 else []
        pieces.append((int(start), float(weight)))
        if stop is not None:
            if stop <= start:
                raise ValueError(f"a term window needs start < stop, got [{start}, {stop})")
            pieces.append((int(stop), then))
        return cls(tuple(pieces))

    def at(self, step: int) -> float | None:
        """The weight on ``step``, ``None`` where the term is off."""
        return next(w for a, w in reversed(self.pieces) if a <= step)


def _upcast(out: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
    """Half-precision outputs (autocast) as float32 for the loss terms; float32/float64 left as they are. A
    multi-stage network (MPRNet) returns its stage images, a list: each is upcast, the terms sum over them."""
    def up(o: torch.Tensor) -> torch.Tensor:
        return o.float() if o.dtype in (torch.float16, torch.bfloat16) else o

    return [up(o) for o in out] if isinstance(out, (list, tuple)) else up(out)


def weight_at(weight: float | StepWeight, step: int) -> float | None:
    """A ``loss_terms`` weight on ``step`` (plain numbers hold on every step)."""
    return weight.at(step) if isinstance(weight, StepWeight) else weight


class TrainingCollapsed(RuntimeError):
    """The loss became NaN/inf; ``step`` and ``terms`` say where and which term."""

    def __init__(self, step: int, terms: dict[str, float]):
        self.step, self.terms = step, terms
        super().__init__(f"training collapsed at step {step}: loss terms {terms}. Lower the learning rate or the "
                         f"weight of the term that diverged.")


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def atomic_save(obj: Any, path: str | Path) -> None:
    """torch.save to a temporary file, fsync, then rename (:func:`irlib.io.atomic_torch_save`), so a crash or a
    power loss never leaves a half-written checkpoint."""
    from .io import atomic_torch_save

    atomic_torch_save(obj, path)


def _frozen_param_names(module: torch.nn.Module) -> set[str]:
    return {n for n, p in module.named_parameters() if not p.requires_grad}


def trainable_state(module: torch.nn.Module) -> dict:
    """``module.state_dict()`` without its frozen parameters (a loss term's pretrained feature network)."""
    frozen = _frozen_param_names(module)
    return {k: v for k, v in module.state_dict().items() if k not in frozen}


def load_trainable_state(module: torch.nn.Module, sd: dict) -> None:
    """Load a :func:`trainable_state`; every key but the frozen parameters must be present."""
    res = module.load_state_dict(sd, strict=False)
    missing = set(res.missing_keys) - _frozen_param_names(module)
    if missing or res.unexpected_keys:
        raise RuntimeError(f"checkpoint of {type(module).__name__} does not match: missing {sorted(missing)[:5]}, "
                           f"unexpected {list(res.unexpected_keys)[:5]}")


class EMA:
    """Exponential moving average of a model's parameters and buffers (``decay`` per step)."""

    def __init__(self, model: torch.nn.Module, decay: float = 0.999):
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        for e, p in zip(self.model.parameters(), model.parameters()):
            e.lerp_(p.detach(), 1 - self.decay)
        for e, b in zip(self.model.buffers(), model.buffers()):
            e.copy_(b)

    def state_dict(self) -> dict:
        return self.model.state_dict()

    def load_state_dict(self, sd: dict) -> None:
        self.model.load_state_dict(sd)


def _dist_info() -> tuple[int, int]:
    ws = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), ws


@dataclass
class Trainer:
    model: torch.nn.Module
    batches: Callable[[int], dict]
    loss_terms: dict[str, tuple[float | StepWeight, LossFn]]
    lr: float = 2e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    optimizer: str = "adam"  # or "adamw" (decoupled weight decay)
    grad_clip: float | None = None
    amp: str | None = None
    ema_decay: float | None = None
    device: str = "cpu"
    ckpt_dir: str | Path | None = None
    ckpt_every: int = 0
    forward: Callable[[torch.nn.Module, dict], torch.Tensor] | None = None
    on_collapse: str = "raise"  # or "stop": return the log with collapsed=True
    progress: bool = True
    scheduler: Callable[[torch.optim.Optimizer], Any] | None = None
    ckpt_seconds: float = 0.0   # also checkpoint when this long has passed since the last save (preemption)
    callback: Callable[["Trainer", dict], None] | None = None   # called after every step with the logged terms
    accum: int = 1              # gradient accumulation: each step's batch in this many equal micro-batches
    step: int = field(default=0, init=False)
    collapsed: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self.rank, self.world = _dist_info()
        if self.world > 1 and not torch.distributed.is_initialized():
            backend = "nccl" if torch.cuda.is_available() and self.device.startswith("cuda") else "gloo"
            torch.distributed.init_process_group(backend)
        self.model.to(self.device)
        for _, fn in self.loss_terms.values():  # loss modules (VGG, history copies, discriminators) follow
            if isinstance(fn, torch.nn.Module):
                fn.to(self.device)
        self.net = self.model
        if self.world > 1:
            self.net = torch.nn.parallel.DistributedDataParallel(self.model)
            if hasattr(self.batches, "rank"):
                self.batches.rank = self.rank
        params = [p for p in self.model.parameters() if p.requires_grad]
        if self.optimizer not in ("adam", "adamw"):
            raise ValueError(f"optimizer must be adam or adamw, got {self.optimizer!r}")
        opt_cls = torch.optim.AdamW if self.optimizer == "adamw" else torch.optim.Adam
        self.opt = opt_cls(params, lr=self.lr, betas=self.betas, weight_decay=self.weight_decay,
                           fused=self.device.startswith("cuda") or None)  # one kernel per step on GPU
        self.sched = self.scheduler(self.opt) if self.scheduler else None
        self.ema = EMA(self.model, self.ema_decay) if self.ema_decay else None
        self.scaler = torch.amp.GradScaler(enabled=(self.amp == "fp16"))
        self.log: list[dict] = []
        self._saved_at = time.monotonic()
        if self.ckpt_dir and (Path(self.ckpt_dir) / "last.pt").is_file():
            self.load(Path(self.ckpt_dir) / "last.pt")

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """Everything a resumed run needs. Loss terms contribute only their trainable state (SPN's history
        copies, a discriminator and its optimiser): frozen feature networks (VGG, DINOv2, ADM) are rebuilt,
        never written into checkpoints."""
        terms = {k: trainable_state(fn) for k, (_, fn) in self.loss_terms.items() if hasattr(fn, "state_dict")}
        return {"step": self.step, "model": self.model.state_dict(), "opt": self.opt.state_dict(),
                "sched": self.sched.state_dict() if self.sched else None,
                "scaler": self.scaler.state_dict(), "ema": self.ema.state_dict() if self.ema else None,
                "terms": terms, "log": self.log, "torch_rng": torch.get_rng_state()}

    def load(self, path: str | Path) -> None:
        sd = torch.load(path, map_location=self.device, weights_only=False)
        self.model.load_state_dict(sd["model"])
        self.opt.load_state_dict(sd["opt"])
        if self.sched and sd.get("sched"):
            self.sched.load_state_dict(sd["sched"])
        self.scaler.load_state_dict(sd["scaler"])
        if self.ema and sd.get("ema"):
            self.ema.load_state_dict(sd["ema"])
        for k, tsd in sd.get("terms", {}).items():
            load_trainable_state(self.loss_terms[k][1], tsd)
        self.step, self.log = sd["step"], sd["log"]
        torch.set_rng_state(sd["torch_rng"])

    def save(self) -> None:
        if self.ckpt_dir and self.rank == 0:
            atomic_save(self.state_dict(), Path(self.ckpt_dir) / "last.pt")
        self._saved_at = time.monotonic()

    # ------------------------------------------------------------------ loop
    def _to(self, batch: dict) -> dict:
        return {k: (v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}

    def train_step(self, batch: dict) -> dict[str, float]:
        """One optimiser step on ``batch``. With ``accum`` > 1 it is computed in that many equal micro-batches:
        each micro-batch's loss is scaled by 1/accum and gradients add up before the one step (the same update
        for loss terms that are means over the batch, not for batch statistics such as BatchNorm's); logged
        terms are then the mean over the micro-batches."""
        self.net.train()
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.amp or "", None)
        dev_type = "cuda" if self.device.startswith("cuda") else "cpu"
        weights = {k: weight_at(w, self.step) for k, (w, _) in self.loss_terms.items()}
        active = {k: (w, self.loss_terms[k][1]) for k, w in weights.items() if w is not None}
        if not active:
            raise ValueError(f"no loss term is on at step {self.step}: check the terms' step windows")
        self.opt.zero_grad(set_to_none=True)
        sums: dict[str, float] = {}
        for micro in split_batch(batch, self.accum) if self.accum > 1 else (batch,):
            micro = {**micro, "step": self.step, "active": tuple(active)}
            with torch.autocast(dev_type, dtype=dtype, enabled=dtype is not None):
                out = _upcast(self.forward(self.net, micro) if self.forward else self.net(micro["lq"]))
                values = {k: fn(out, micro, self.model) for k, (_, fn) in active.items()}
                total = sum(w * values[k] for k, (w, _) in active.items())
            # one device->host copy per micro-batch for all logged values (not one sync per term)
            logged = torch.stack([torch.as_tensor(v, device=total.device).detach().float().reshape(())
                                  for v in (*values.values(), total)])
            terms = dict(zip([*values, "loss"], logged.tolist()))
            if not all(math.isfinite(v) for v in terms.values()):
                raise TrainingCollapsed(self.step, terms)
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v / self.accum
            self.scaler.scale(total / self.accum if self.accum > 1 else total).backward()
        if self.grad_clip:
            self.scaler.unscale_(self.opt)
            sums["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip))
        self.scaler.step(self.opt)
        self.scaler.update()
        if self.sched:
            self.sched.step()
        return sums

    def fit(self, max_steps: int, stop_after: int | None = None) -> pd.DataFrame:
        """Train until ``max_steps`` total steps (resuming from the checkpoint if there is one).

        ``stop_after`` ends this call early after that many steps (used to test resume).
        """
        done_here = 0
        bar = tqdm(total=max_steps, initial=self.step, disable=not self.progress or self.rank != 0,
                   desc="train", leave=False)
        while self.step < max_steps:
            batch = self._to(self.batches(self.step))
            try:
                terms = self.train_step(batch)
            except TrainingCollapsed as e:
                if self.on_collapse == "stop":
                    self.collapsed = True
                    self.log.append({"step": self.step, **e.terms, "collapsed": True})
                    break
                raise
            self.step += 1
            done_here += 1
            for _, fn in self.loss_terms.values():
                if hasattr(fn, "after_step"):
                    fn.after_step(self.model, self.step)
            if self.ema:
                self.ema.update(self.model)
            self.log.append({"step": self.step, **terms})
            bar.update(1)
            bar.set_postfix(loss=f"{terms['loss']:.4f}")
            if self.callback is not None:
                self.callback(self, terms)
            if (self.ckpt_every and self.step % self.ckpt_every == 0) or (
                    self.ckpt_dir and self.ckpt_seconds and time.monotonic() - self._saved_at > self.ckpt_seconds):
                self.save()
            if stop_after is not None and done_here >= stop_after:
                break
        bar.close()
        if self.ckpt_every and self.step == max_steps and self.step % self.ckpt_every:
            self.save()  # the final state, so a finished run is not repeated
        return pd.DataFrame(self.log)

    def eval_model(self) -> torch.nn.Module:
        """The EMA model when EMA is on, else the trained model (in eval mode)."""
        return (self.ema.model if self.ema else self.model).eval()


def split_batch(batch: dict, k: int) -> list[dict]:
    """``batch`` as ``k`` equal micro-batches, in order: tensors and lists whose length is the batch size are
    split, anything else (a step index) is shared. The batch size must be a multiple of ``k``."""
    n = batch["lq"].shape[0]
    if k < 1 or n % k:
        raise ValueError(f"gradient accumulation {k} does not divide the batch of {n}")
    m = n // k
    out = []
    for i in range(k):
        sl = slice(i * m, (i + 1) * m)
        out.append({key: (v[sl] if (torch.is_tensor(v) and v.dim() and v.shape[0] == n)
                          or (isinstance(v, list) and len(v) == n) else v) for key, v in batch.items()})
    return out


def padded_forward(run: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, pad_to: int,
                   out_size: tuple[int, int] | None = None) -> torch.Tensor:
    """``run(x)`` with ``x`` reflect-padded (bottom/right) to a multiple of ``pad_to``, the output cropped to
    ``out_size`` (default: the input's size; pass the target size for super-resolution). A multi-stage network
    that returns a list of stage images (MPRNet) gives its first, the restored image its release tests."""
    h, w = out_size or x.shape[-2:]
    ph, pw = (-x.shape[-2]) % pad_to, (-x.shape[-1]) % pad_to
    if ph or pw:
        x = torch.nn.functional.pad(x, (0, pw, 0, ph), mode="reflect")
    y = run(x)
    if isinstance(y, (list, tuple)):
        y = y[0]
    return y[..., :h, :w]


@torch.no_grad()
def evaluate(model: torch.nn.Module, pairs, *, forward: Callable | None = None, device: str = "cpu",
             metric_kw: dict | None = None, pad_to: int = 1) -> pd.DataFrame:
    """Per-image PSNR/SSIM of ``model`` on ``[(lq, gt), ...]`` (3xHxW tensors) as a DataFrame.

    ``pad_to`` reflect-pads inputs to a multiple of it (U-Nets need /8) and crops the output back.
    """
    from .metrics import measure

    model.eval().to(device)
    rows = []
    for k, (lq, gt) in enumerate(pairs):
        run = (lambda x, k=k: forward(model, {"lq": x, "index": k})) if forward else model
        y = padded_forward(run, lq[None].to(device), pad_to, gt.shape[-2:]).clamp(0, 1).float().cpu()
        m = measure(y, gt[None], **(metric_kw or {}))
        rows.append({"image": k, "PSNR": float(m["PSNR"][0]), "SSIM": float(m["SSIM"][0])})
    return pd.DataFrame(rows)


def time_steps(trainer: Trainer, n: int = 10, warmup: int = 2) -> list[float]:
    """Wall-clock seconds of each of ``n`` training steps after ``warmup`` steps (synchronising CUDA around
    each, so every step's device work is inside its own interval)."""
    import time

    cuda = trainer.device.startswith("cuda")
    trainer.progress = False
    trainer.fit(trainer.step + warmup)
    times = []
    for _ in range(n):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        trainer.fit(trainer.step + 1)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return times
