"""What every run of a plan costs before a GPU is spent: FLOPs and peak memory per training step (counted on the
meta device by :mod:`irlib.engine.trace`, cached by the run's key), GPU-hours with their basis, the smallest GPU a
run fits on, and the gradient-accumulation factor that makes it fit on a chosen one.

GPU-hours, basis ``measured``: the median step time of the matching bench variant in
``irlib/resources/measurements`` (plain loss or +SPN), scaled linearly by pixels per step (batch x patch^2) when
the run's batch or patch differ from the measured ones, times the run's steps. Basis ``flops``: traced FLOPs per
step / (the device's dense peak x utilisation), with the utilisation calibrated on the bench configurations,
which are both measured and traced (:func:`calibrate` prints the error of this model on them). On another device
than the measured H100, measured step times are scaled by the ratio of peaks. Evaluation and data loading are
not included. These are estimates, and say so wherever they are printed.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable, Iterable, Sequence

import pandas as pd

from .spec import Average, Measure, Row, RowKey, RunSpec


@dataclass(frozen=True)
class Measured:
    """Which bench rows measure a network: ``paper`` of the bench CSV, its plain and +SPN variants, and the
    batch / ground-truth patch side they were timed at."""

    net: str
    scale: int | None
    bench: str
    plain: str
    spn: str | None
    batch: int
    patch: int


# irlib.bench --scale paper: EDSR-light x4 at batch 16 with 48-px LR patches (192 px HR); IDT at batch 8 on
# 128-px patches; NAFNet-32 at batch 4 on 256-px patches.
MEASURED = (
    Measured("EDSR-light", 4, "spn", "L1", "L1 + SPN (4 neg, loop)", 16, 192),
    Measured("IDT", None, "spn-idt", "L1", "L1 + SPN (4 neg, loop)", 8, 128),
    Measured("NAFNet", None, "diffloss", "L2", None, 4, 256),
)


def measurements() -> pd.DataFrame:
    """Every committed measurement (one CSV per device), paper scale only."""
    frames = []
    for f in resources.files("irlib.resources").joinpath("measurements").iterdir():
        if f.name.endswith(".csv"):
            with f.open() as fh:
                frames.append(pd.read_csv(fh))
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return df[df["scale"] == "paper"] if "scale" in df else df


def step_seconds(run: RunSpec, table: pd.DataFrame | None = None) -> tuple[float | None, str]:
    """(estimated seconds per training step, how it was obtained) or (None, why not)."""
    from .runner import effective_schedule

    table = measurements() if table is None else table
    kw = dict(run.net_kw)
    names = {t.name for t in run.terms}
    for m in MEASURED:
        if m.net != run.net or (m.scale is not None and kw.get("scale") != m.scale):
            continue
        extra = names - {"l1", "l1_pm1", "mse", "mse_pm1", "psnr", "spn"}
        if extra:
            return None, f"no measurement of {run.net} with {', '.join(sorted(extra))}"
        variant = m.spn if "spn" in names else m.plain
        if variant is None:
            return None, f"no measurement of {run.net} with SPN"
        rows = table[(table["paper"] == m.bench) & (table["variant"] == variant)]
        if rows.empty:
            return None, f"bench rows {m.bench}/{variant} missing"
        s = float(rows["s_per_step"].median())
        sched = effective_schedule(run)
        factor = (sched.batch * sched.patch ** 2) / (m.batch * m.patch ** 2)
        how = f"{variant} on {rows['device'].iloc[0]} (median of {len(rows)} runs)"
        if abs(factor - 1) > 1e-9:
            how += f", scaled x{factor:.3g} from batch {m.batch} at {m.patch} px"
        return s * factor, how
    return None, f"no step cost measured for {run.net}"



# ------------------------------------------------------------------------------------------ devices
@dataclass(frozen=True)
class Device:
    """A GPU: dense (no sparsity) peak TFLOP/s for bf16 tensor cores and for fp32 training (TF32 tensor cores,
    which PyTorch's cuDNN convolutions use by default; V100 has none: plain fp32), memory in GiB and memory
    bandwidth in GB/s."""

    name: str
    bf16_tflops: float
    fp32_tflops: float
    memory_gib: float
    bandwidth_gbs: float


# Vendor data sheets (dense, SXM where there are variants): H100 SXM5, A100 SXM4 80/40 GB, L40S, A10, V100 SXM2
# 32 GB (fp16 tensor cores for the bf16 column), RTX 4090, RTX A6000.
DEVICES: dict[str, Device] = {d.name: d for d in (
    Device("h100", 989.0, 494.7, 80.0, 3350.0),
    Device("a100-80", 312.0, 156.0, 80.0, 2039.0),
    Device("a100-40", 312.0, 156.0, 40.0, 1555.0),
    Device("l40s", 362.0, 183.0, 48.0, 864.0),
    Device("a6000", 154.8, 77.4, 48.0, 768.0),
    Device("rtx4090", 165.2, 82.6, 24.0, 1008.0),
    Device("a10", 125.0, 62.5, 24.0, 600.0),
    Device("v100", 125.0, 15.7, 32.0, 900.0),
)}
MEASURED_ON = "h100"            # the device of irlib/resources/measurements
CUDA_RESERVE_GIB = 1.0          # CUDA context, cuDNN/cuBLAS workspaces: not in the traced peak


def device(name: str) -> Device:
    if name not in DEVICES:
        raise ValueError(f"unknown GPU {name!r}; listed: {', '.join(DEVICES)}")
    return DEVICES[name]


# ------------------------------------------------------------------------------------------ traces, cached
TRACE_VERSION = 2


def cache_dir() -> Path:
    """Where traces are kept: ``$IRLIB_COST_CACHE`` or ``~/.cache/irlib/cost``."""
    return Path(os.environ.get("IRLIB_COST_CACHE") or Path.home() / ".cache" / "irlib" / "cost")


def traced(spec: RunSpec, test_hw: tuple[int, int] | None = None, batch: int | None = None) -> dict:
    """:func:`irlib.engine.trace.trace_run` of ``spec`` (at ``batch`` instead of the schedule's when given),
    cached as JSON under :func:`cache_dir` by the key of the run's cost signature (runs differing only in seed,
    steps, data or model selection share one trace)."""
    import torch

    from .trace import trace_run, trace_signature

    sig = trace_signature(spec)
    if batch is not None:
        sig = dataclasses.replace(sig, schedule=dataclasses.replace(sig.schedule, batch=batch))
    name = f"{sig.key()}-{'x'.join(map(str, test_hw)) if test_hw else 'noeval'}-v{TRACE_VERSION}.json"
    f = cache_dir() / name
    if f.is_file():
        try:
            return json.loads(f.read_text())
        except (OSError, ValueError):
            pass
    if name in shipped_traces():
        return dict(shipped_traces()[name])
    out = trace_run(sig, test_hw)
    out.update(torch=torch.__version__, net=spec.net, terms=[t.name for t in spec.terms])
    f.parent.mkdir(parents=True, exist_ok=True)
    tmp = f.with_name(f.name + f".{os.getpid()}.partial")
    tmp.write_text(json.dumps(out))
    os.replace(tmp, f)
    return out


SHIPPED = "cost_traces.json"


@functools.lru_cache(maxsize=1)
def shipped_traces() -> dict[str, dict]:
    """Traces of the full plan's runs shipped with irlib (``irlib/resources/cost_traces.json``), so that
    ``irlib plan`` is fast on a fresh install; a run whose spec changed since is traced on first use."""
    f = resources.files("irlib.resources").joinpath(SHIPPED)
    if not f.is_file():
        return {}
    with f.open() as fh:
        return json.load(fh)


def export_traces(path: str | Path, names: Iterable[str] | None = None) -> int:
    """Write the cached traces (all, or the cache file ``names``) as one JSON (the shipped file); returns how many."""
    files = sorted(cache_dir().glob(f"*-v{TRACE_VERSION}.json"))
    want = set(names) if names is not None else None
    data = {f.name: json.loads(f.read_text()) for f in files if want is None or f.name in want}
    Path(path).write_text(json.dumps(data, indent=0, sort_keys=True))
    return len(data)


def largest_test_images(plans: Iterable) -> dict[str, tuple[int, int]]:
    """Run key -> the largest test image (h, w) it is evaluated on, from the plans' rows (sizes: TEST_SIZES)."""
    from .trace import TEST_SIZES

    out: dict[str, tuple[int, int]] = {}
    for p in plans:
        for row in p.rows:
            for m in _measures(row):
                hw = TEST_SIZES.get(m.eval.testset.dataset.split(":")[0])
                if hw is None:
                    continue
                for r in m.runs + m.baseline:
                    old = out.get(r.key(), (0, 0))
                    out[r.key()] = hw if hw[0] * hw[1] > old[0] * old[1] else old
    return out


def _measures(row: Row) -> list[Measure]:
    src = row.source
    if isinstance(src, Measure):
        return [src]
    return [x[0] for x in getattr(src, "parts", ()) if isinstance(x, tuple)]


# ------------------------------------------------------------------------------------------ calibration
@dataclass(frozen=True)
class BenchPoint:
    """A bench configuration written as a run: which plan run to take as template (``net`` or, for the
    DiffLoss bench, any run with ``terms``), and the bench's network, batch and patch."""

    bench: str
    variant: str
    net: str
    terms: frozenset
    batch: int
    patch: int
    template_net: str = ""
    template_rec: str = ""   # the plan runs' reconstruction loss where the bench measured L1 in its place


BENCH_POINTS = (
    BenchPoint("spn", "L1", "EDSR-light", frozenset({"l1"}), 16, 192),
    BenchPoint("spn", "L1 + SPN (4 neg, loop)", "EDSR-light", frozenset({"l1", "spn"}), 16, 192),
    # the IDT bench measured L1; the plan's IDT runs train with IDT's -SSIM (neg_ssim): templates with L1 put back
    BenchPoint("spn-idt", "L1", "IDT", frozenset({"l1"}), 8, 128, template_rec="neg_ssim"),
    BenchPoint("spn-idt", "L1 + SPN (4 neg, loop)", "IDT", frozenset({"l1", "spn"}), 8, 128, template_rec="neg_ssim"),
    # the DiffLoss bench measured L2 on [0, 1]; the plan's DiffLoss runs compute it on [-1, 1] as the release does
    # (mse_pm1): the same step but for one affine map of two tensors, so those runs are the templates
    BenchPoint("diffloss", "L2", "NAFNet", frozenset({"mse_pm1"}), 4, 256, template_net="MSBDN"),
    BenchPoint("diffloss", "L2 + DiffLoss (fp32)", "NAFNet", frozenset({"mse_pm1", "diffloss"}), 4, 256,
               template_net="MSBDN"),
)


def bench_specs(runs: Sequence[RunSpec]) -> list[tuple[BenchPoint, RunSpec]]:
    """Each bench point as a run spec, made from a plan run of the same network and loss terms (the DiffLoss
    bench's NAFNet-32 from a DiffLoss run: same terms, network swapped)."""
    out = []
    for b in BENCH_POINTS:
        want = b.template_net or b.net
        terms = {b.template_rec if b.template_rec and t == "l1" else t for t in b.terms}
        tpl = next((r for r in runs if r.net == want and {t.name for t in r.terms} == terms
                    and dict(r.net_kw).get("scale") in (None, 4)), None)
        if tpl is None:
            continue
        spec = tpl if not b.template_net else tpl.replace(net=b.net, net_kw=())
        sched = dataclasses.replace(spec.schedule, batch=b.batch, patch=b.patch)
        if b.template_rec:
            spec = spec.replace(terms=tuple(dataclasses.replace(t, name="l1") if t.name == b.template_rec else t
                                            for t in spec.terms))
            sched = dataclasses.replace(sched, rec="l1")
        out.append((b, spec.replace(schedule=sched)))
    return out


@dataclass(frozen=True)
class Calibration:
    """Step-time model ``s = FLOPs / (fp32 peak x utilisation) + bytes / (bandwidth x bw_utilisation)``, where
    bytes are those of every tensor the traced step creates (a proxy for its memory traffic: normalisation,
    activation and attention-softmax layers are bandwidth-bound), fitted on the bench points (least squares on
    the relative error); and the traced-to-measured memory ratio. ``points``: each point measured and modelled."""

    utilisation: float
    bw_utilisation: float
    memory_factor: float
    points: pd.DataFrame

    def seconds(self, flops: float, allocated_gib: float, dev: Device) -> float:
        s = flops / (dev.fp32_tflops * 1e12 * self.utilisation)
        if self.bw_utilisation > 0:
            s += allocated_gib * 2 ** 30 / (dev.bandwidth_gbs * 1e9 * self.bw_utilisation)
        return s

    def describe(self) -> str:
        p = self.points
        err = (p.s_model / p.s_measured - 1).abs()
        merr = (p.peak_model / p.peak_measured - 1).abs()
        return (f"calibration on {len(p)} bench configurations measured on one H100: step time = FLOPs at "
                f"{self.utilisation:.1%} of the TF32 dense peak + traced bytes at {self.bw_utilisation:.1%} of the "
                f"memory bandwidth; error of this model on them: median {err.median():.0%}, max {err.max():.0%}. "
                f"Memory: measured = {self.memory_factor:.2f} x traced (+{CUDA_RESERVE_GIB:g} GiB reserve), "
                f"error median {merr.median():.0%}, max {merr.max():.0%}")


def calibrate(runs: Sequence[RunSpec], table: pd.DataFrame | None = None,
              trace: Callable[..., dict] = traced) -> Calibration:
    """Fit the step-time model and the memory factor (median ratio) on the bench points."""
    import numpy as np

    table = measurements() if table is None else table
    h100 = DEVICES[MEASURED_ON]
    rows = []
    for b, spec in bench_specs(runs):
        m = table[(table["paper"] == b.bench) & (table["variant"] == b.variant)]
        if m.empty:
            continue
        t = trace(spec)
        rows.append({"bench": b.bench, "variant": b.variant, "flops": t["flops"], "allocated_gib": t["allocated_gib"],
                     "s_measured": float(m["s_per_step"].median()), "peak_measured": float(m["peak_gib"].median()),
                     "peak_traced": t["peak_gib"]})
    pts = pd.DataFrame(rows)
    if pts.empty:
        raise ValueError("no bench point could be calibrated (measurements or template runs missing)")
    # grid search of both utilisations over 1%..100% (physical bounds), least squares of the log error
    f = (pts.flops / (h100.fp32_tflops * 1e12)).to_numpy()
    by = (pts.allocated_gib * 2 ** 30 / (h100.bandwidth_gbs * 1e9)).to_numpy()
    grid = np.exp(np.linspace(math.log(0.01), 0.0, 121))
    model = f[None, None, :] / grid[:, None, None] + by[None, None, :] / grid[None, :, None]
    loss = (np.log(model / pts.s_measured.to_numpy()[None, None, :]) ** 2).sum(-1)
    i, j = np.unravel_index(int(loss.argmin()), loss.shape)
    cal = Calibration(float(grid[i]), float(grid[j]), float((pts.peak_measured / pts.peak_traced).median()), pts)
    pts["s_model"] = [cal.seconds(f, a, h100) for f, a in zip(pts.flops, pts.allocated_gib)]
    pts["peak_model"] = pts.peak_traced * cal.memory_factor
    return cal


# ------------------------------------------------------------------------------------------ per run
def required_gib(peak_gib: float, cal: Calibration | None) -> float:
    """Device memory a traced peak needs: the calibrated factor plus the CUDA reserve."""
    return peak_gib * (cal.memory_factor if cal else 1.0) + CUDA_RESERVE_GIB


def smallest_fit(need_gib: float) -> str:
    """The listed GPU with the least memory that holds ``need_gib`` (``none`` if none does)."""
    fits = sorted((d.memory_gib, d.name) for d in DEVICES.values() if d.memory_gib >= need_gib)
    return fits[0][1] if fits else "none"


def accumulation(spec: RunSpec, gpu: Device, cal: Calibration | None, trace: Callable[..., dict] = traced) -> int:
    """The smallest gradient-accumulation factor (a divisor of the batch) whose micro-batch step fits on
    ``gpu`` (traced at that micro-batch); 0 if even a micro-batch of one does not fit."""
    from .runner import effective_schedule

    b = effective_schedule(spec).batch
    for k in (k for k in range(1, b + 1) if b % k == 0):
        if required_gib(trace(spec, batch=b // k)["peak_gib"], cal) <= gpu.memory_gib:
            return k
    return 0


def run_costs(runs: list[RunSpec], gpu: str = MEASURED_ON, test_hw: dict[str, tuple[int, int]] | None = None,
              calibration: Calibration | None = None, trace: Callable[..., dict] = traced) -> pd.DataFrame:
    """One line per run: steps, FLOPs per step, estimated seconds per step and GPU-hours on ``gpu`` with their
    basis, peak memory (traced, and what the GPU needs), the smallest listed GPU it fits on, the accumulation
    factor that fits it on ``gpu``, and one whole-image evaluation's peak memory."""
    from .runner import effective_schedule

    dev = device(gpu)
    table = measurements()
    cal = calibration or calibrate(runs, table, trace)
    ratio = DEVICES[MEASURED_ON].fp32_tflops / dev.fp32_tflops
    out = []
    for r in runs:
        t = trace(r, (test_hw or {}).get(r.key()))
        steps = effective_schedule(r).steps
        s, how = step_seconds(r, table)
        if s is not None:
            basis = "measured"
            s *= ratio
            if gpu != MEASURED_ON:
                how += f", x{ratio:.3g} ({MEASURED_ON} -> {gpu} peak ratio)"
        else:
            basis = "flops"
            s = cal.seconds(t["flops"], t["allocated_gib"], dev)
            how = (f"{t['flops'] / 1e12:.3g} TFLOP + {t['allocated_gib']:.3g} GiB traffic per step, calibrated "
                   f"roofline on {gpu} ({how})")
        need = required_gib(t["peak_gib"], cal)
        acc = 1 if need <= dev.memory_gib else accumulation(r, dev, cal, trace)
        out.append({"key": r.key(), "paper": r.paper, "label": r.label or r.net, "net": r.net, "steps": steps,
                    "tflops_per_step": t["flops"] / 1e12, "s_per_step_est": s, "gpu_hours_est": s * steps / 3600,
                    "basis": basis, "peak_gib": round(t["peak_gib"], 2), "need_gib": round(need, 2),
                    "fits_on": smallest_fit(need), f"accum_on_{gpu}": acc,
                    "eval_peak_gib": round(t["eval_peak_gib"], 2) if "eval_peak_gib" in t else float("nan"),
                    "how": how})
    columns = ["key", "paper", "label", "net", "steps", "tflops_per_step", "s_per_step_est", "gpu_hours_est",
               "basis", "peak_gib", "need_gib", "fits_on", f"accum_on_{gpu}", "eval_peak_gib", "how"]
    return pd.DataFrame(out, columns=columns)   # a selection of studies or figures alone: no runs, same columns


# ------------------------------------------------------------------------------------------ budget planner
MAIN_TABLE = {"spn": "Table 1", "textpromptir": "Table 1", "diffloss": "Table 1", "dinoir": "Table 1"}
TIERS = ("headline", "main table", "other tables", "figures")


@dataclass(frozen=True)
class Item:
    """What the budget planner buys: a row (or a figure) and every run it needs, dependencies included."""

    paper: str
    table: str
    name: str
    tier: int
    runs: frozenset


def _with_deps(runs: Iterable[RunSpec]) -> set[str]:
    out: set[str] = set()

    def add(r: RunSpec) -> None:
        for d in r.deps():
            add(d)
        out.add(r.key())

    for r in runs:
        add(r)
    return out


def row_run_keys(row: Row, by_key: dict[RowKey, Row]) -> set[str]:
    """Keys of the runs a row needs: its measurements' runs and baselines, the rows an average is made of,
    a study's dependencies, and their dependencies."""
    runs = [r for m in _measures(row) for r in m.runs + m.baseline]
    runs += list(getattr(getattr(row.source, "study", None), "deps", ()))
    keys = _with_deps(runs)
    if isinstance(row.source, Average):
        for part in row.source.parts:
            if isinstance(part, RowKey) and part in by_key:
                keys |= row_run_keys(by_key[part], by_key)
    return keys


def budget_items(plans: Iterable) -> list[Item]:
    """Every row and figure of the plans with its tier: 0 each paper's headline comparison (main-table rows
    measured against a paired baseline; where the main table pairs none, its rows measured from runs), 1 the
    other main-table rows, 2 the other tables' rows, 3 the figures."""
    items = []
    for p in plans:
        by_key = {r.key: r for r in p.rows}
        main = MAIN_TABLE.get(p.paper, "Table 1")
        paired = any(m.baseline for r in p.rows if r.key.table == main for m in _measures(r))
        for row in p.rows:
            if row.key.table == main:
                head = any(m.baseline for m in _measures(row)) if paired else bool(_measures(row))
                tier = 0 if head else 1
            else:
                tier = 2
            k = row.key
            items.append(Item(p.paper, k.table, f"{k.method} | {k.setting} | {k.dataset} | {k.metric}", tier,
                              frozenset(row_run_keys(row, by_key))))
        for f in p.figures:
            items.append(Item(p.paper, f.figure, f.title, 3, frozenset(_with_deps(f.runs))))
    return items


def plan_budget(items: Sequence[Item], hours: dict[str, float], budget: float) -> tuple[list[str], list[Item], list[Item]]:
    """Greedy selection of runs within ``budget`` GPU-hours: tier by tier, the item whose missing runs cost least
    is bought next (items whose runs are already bought come free), until no item of the tier fits; then the
    next tier. Returns (selected run keys in order, covered items, items left). Never exceeds the budget; an
    item with a run of unknown cost is never bought."""
    chosen: list[str] = []
    have: set[str] = set()
    spent = 0.0
    covered: list[Item] = []
    left = list(items)
    for tier in range(len(TIERS)):
        while True:
            best, best_cost = None, math.inf
            for it in left:
                if it.tier != tier:
                    continue
                miss = it.runs - have
                c = sum(hours.get(k, math.inf) for k in miss)
                if spent + c <= budget + 1e-9 and c < best_cost:
                    best, best_cost = it, c
            if best is None:
                break
            for k in sorted(best.runs - have):
                chosen.append(k)
                have.add(k)
            spent += best_cost
            free = [it for it in left if it.runs <= have]
            covered += free
            left = [it for it in left if not it.runs <= have]
    return chosen, covered, left
