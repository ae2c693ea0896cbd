"""Cost of runs before they run: traced FLOPs against a real step, traced memory against a real step's peak RSS,
every full-plan run costed, the budget planner, and gradient accumulation."""
from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from irlib import papers
from irlib.engine import cost
from irlib.engine.trace import TraceFeatureBank, build_step, measure_step, trace_run
from irlib.train import Trainer, split_batch


def _smoke_run(net: str, terms: set[str], batch: int = 2, patch: int = 32):
    for p in papers.build_all("smoke"):
        for r in p.runs():
            if r.net == net and {t.name for t in r.terms} == terms:
                return r.replace(schedule=dataclasses.replace(r.schedule, batch=batch, patch=patch))
    raise LookupError(net)


def _real_step(spec) -> dict:
    torch.manual_seed(0)
    tr, batch = build_step(spec, TraceFeatureBank(spec.size))
    return measure_step(tr, batch)


@pytest.mark.parametrize("net,terms", [("EDSR-light", {"l1", "spn"}), ("MSBDN", {"mse_pm1", "diffloss"}),
                                       ("TextPromptIR", {"l1"})])
def test_meta_trace_flops_equal_a_real_step(net, terms):
    """The meta-device trace counts exactly the FLOPs FlopCounterMode counts on the real step (same network,
    loss terms with their feature networks, optimiser)."""
    spec = _smoke_run(net, terms)
    fake = trace_run(spec)
    real = _real_step(spec)
    assert fake["flops"] > 0
    assert fake["flops"] == real["flops"]
    assert fake["peak_gib"] == pytest.approx(real["peak_gib"], rel=1e-6)   # same tracker, same storages


RSS_SCRIPT = textwrap.dedent("""
    import dataclasses, json, sys
    import torch
    from irlib import papers
    from irlib.engine.trace import TraceFeatureBank, build_step, steady_state, step

    net, terms, batch, patch = sys.argv[1], set(sys.argv[2].split(",")), int(sys.argv[3]), int(sys.argv[4])
    spec = next(r for p in papers.build_all("smoke") for r in p.runs()
                if r.net == net and {t.name for t in r.terms} == terms)
    spec = spec.replace(schedule=dataclasses.replace(spec.schedule, batch=batch, patch=patch))

    def status(field):
        return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith(field))

    torch.manual_seed(0)
    tr, b = build_step(spec, TraceFeatureBank(spec.size))
    steady_state(tr)
    step(tr, b)                      # warm: lazily built kernels and caches
    base = status("VmRSS:")
    open("/proc/self/clear_refs", "w").write("5")    # reset the high-water mark
    step(tr, b)
    print(json.dumps({"dynamic": status("VmHWM:") - base}))
""")


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux /proc peak-RSS reset")
@pytest.mark.parametrize("net,terms,batch,patch", [("NAFNet", {"l1"}, 8, 128), ("MSBDN", {"mse_pm1"}, 4, 128),
                                                    ("IDT", {"l1"}, 2, 64)])
def test_traced_memory_matches_a_real_cpu_step(net, terms, batch, patch):
    """Independent measurement: peak RSS growth of a real CPU step (``VmHWM`` after resetting it through
    ``/proc/self/clear_refs``), with glibc's mmap threshold fixed at 64 KiB so freed tensors go back to the OS,
    against the traced peak minus what exists before the step (parameters, gradients, optimiser state, batch).
    Known gap: memory that kernels allocate internally (oneDNN / cuDNN workspaces) is not a tensor and is not
    traced; EDSR-light (batch 8, 192 px) measures 28% above its trace on CPU, 19% above on the H100 bench."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", RSS_SCRIPT, net, ",".join(sorted(terms)), str(batch), str(patch)],
                         capture_output=True, text=True, env=env, check=True)
    measured = json.loads(out.stdout.strip().splitlines()[-1])["dynamic"]
    spec = _smoke_run(net, terms, batch, patch)
    t = trace_run(spec)
    traced = (t["peak_gib"] - t["static_gib"]) * 2 ** 30
    assert measured > 20 * 2 ** 20          # the step's activations dominate interpreter noise
    assert traced == pytest.approx(measured, rel=0.25)


def test_every_full_plan_run_has_cost_memory_and_basis():
    """Every distinct run of the full plan gets GPU-hours, a basis, a traced peak and a fit (traces cached)."""
    plans = papers.build_all("full")
    runs = list({r.key(): r for p in plans for r in p.runs()}.values())
    c = cost.run_costs(runs, "h100", cost.largest_test_images(plans))
    assert len(c) == len(runs) >= 90
    assert c.gpu_hours_est.map(math.isfinite).all() and (c.gpu_hours_est > 0).all()
    assert set(c.basis) <= {"measured", "flops"} and (c.basis == "measured").sum() >= 10
    assert (c.peak_gib > 0).all() and c.fits_on.ne("").all()
    assert c.eval_peak_gib.notna().sum() >= len(runs) - 5
    assert (c.accum_on_h100 >= 1).all()
    # a heavier recipe costs more: DiffLoss carries the ADM in every step
    with_adm = {r.key() for r in runs if any(t.name == "diffloss" for t in r.terms)}
    d = c[c.paper == "diffloss"]
    assert d[d.key.isin(with_adm)].tflops_per_step.min() > 20 > d[~d.key.isin(with_adm)].tflops_per_step.max()


def test_calibration_error_is_reported_and_bounded():
    plans = papers.build_all("full")
    cal = cost.calibrate([r for p in plans for r in p.runs()])
    p = cal.points
    assert len(p) == 6
    assert (p.s_model / p.s_measured).between(0.5, 2.0).all()
    assert (p.peak_model / p.peak_measured).between(0.6, 1.4).all()
    assert "error" in cal.describe()


def _item(paper, table, name, tier, runs):
    return cost.Item(paper, table, name, tier, frozenset(runs))


def test_budget_planner_headline_first_and_within_budget():
    hours = {"base": 10.0, "meth": 12.0, "abl1": 5.0, "abl2": 1.0, "other": 3.0, "fig": 0.5, "huge": 500.0}
    items = [
        _item("p", "Table 2", "ablation", 2, {"abl1", "base"}),
        _item("p", "Table 2", "ablation cheap", 2, {"abl2"}),
        _item("p", "Table 1", "method vs baseline", 0, {"meth", "base"}),
        _item("p", "Table 1", "other row", 1, {"other"}),
        _item("p", "Table 1", "too big", 1, {"huge"}),
        _item("p", "Fig. 1", "figure", 3, {"fig", "meth"}),
    ]
    chosen, covered, left = cost.plan_budget(items, hours, 25.0)
    assert {"meth", "base"} <= set(chosen[:2])            # the headline comparison is bought first
    assert sum(hours[k] for k in chosen) <= 25.0
    names = [i.name for i in covered]
    assert names.index("method vs baseline") == 0
    assert "too big" in [i.name for i in left]
    # 22 on the headline, 3 on the other main-table row: no ablation (1 or 15 more) or figure (12.5) fits
    assert set(chosen) == {"meth", "base", "other"}
    chosen, covered, _ = cost.plan_budget(items, hours, 22.0)
    assert set(chosen) == {"meth", "base"}
    chosen, _, _ = cost.plan_budget(items, hours, 21.9)   # the headline does not fit: cheaper tiers proceed
    assert "meth" not in chosen and sum(hours[k] for k in chosen) <= 21.9
    for b in (0.0, 1.0, 7.7, 40.0, 1000.0):
        chosen, covered, left = cost.plan_budget(items, hours, b)
        assert sum(hours[k] for k in chosen) <= b + 1e-9
        assert len(covered) + len(left) == len(items)


def test_budget_items_of_the_full_plan():
    items = cost.budget_items(papers.build_all("full"))
    head = {i.paper for i in items if i.tier == 0}
    assert head == {"spn", "textpromptir", "diffloss", "dinoir"}
    assert all(i.runs for i in items if i.tier == 0)
    avg = [i for i in items if i.paper == "textpromptir" and i.table == "Table 1" and "Avg" in i.name]
    assert avg and all(i.runs for i in avg)               # averages need their parts' runs


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.b = torch.nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, x):
        return x + self.b(torch.tanh(self.a(x)))


def _trainer(accum: int, batches) -> Trainer:
    torch.manual_seed(0)
    m = _Net().double()
    l1 = lambda out, b, model: (out - b["gt"]).abs().mean()       # noqa: E731
    l2 = lambda out, b, model: ((out - b["gt"]) ** 2).mean()      # noqa: E731
    return Trainer(m, batches, {"l1": (1.0, l1), "l2": (0.5, l2)}, lr=1e-2, grad_clip=0.5, accum=accum,
                   progress=False, ema_decay=0.9)


def test_accumulated_steps_equal_plain_steps():
    g = torch.Generator().manual_seed(1)
    data = [{"lq": torch.rand(8, 3, 12, 12, generator=g, dtype=torch.float64),
             "gt": torch.rand(8, 3, 12, 12, generator=g, dtype=torch.float64), "task": ["noise25"] * 8}
            for _ in range(3)]
    plain, acc = _trainer(1, lambda s: data[s]), _trainer(4, lambda s: data[s])
    lp, la = plain.fit(3), acc.fit(3)
    for p, q in zip(plain.model.parameters(), acc.model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-12)
    for p, q in zip(plain.ema.model.parameters(), acc.ema.model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-12)
    assert la.loss.to_numpy() == pytest.approx(lp.loss.to_numpy(), rel=1e-6)   # logged in float32
    # and it is not vacuous: one micro-batch alone gives another update
    single = _trainer(1, lambda s: split_batch(data[s], 4)[0])
    single.fit(1)
    assert not torch.allclose(next(single.model.parameters()), next(_trainer(1, lambda s: data[s]).model.parameters()))


def test_split_batch():
    b = {"lq": torch.arange(6.).view(6, 1), "gt": torch.arange(6.).view(6, 1), "task": list("abcdef"), "index": 3}
    parts = split_batch(b, 3)
    assert [p["task"] for p in parts] == [["a", "b"], ["c", "d"], ["e", "f"]]
    assert parts[2]["lq"].flatten().tolist() == [4.0, 5.0] and parts[1]["index"] == 3
    with pytest.raises(ValueError, match="does not divide"):
        split_batch(b, 4)


def test_devices_and_fits():
    assert cost.smallest_fit(20.0) == "a10"              # 24 GiB, first of the 24-GiB cards by name
    assert cost.smallest_fit(70.0) in ("h100", "a100-80")
    assert cost.smallest_fit(500.0) == "none"
    with pytest.raises(ValueError, match="unknown GPU"):
        cost.device("tpu")


def test_idt_bench_points_keep_the_l1_they_measured():
    """The IDT bench measured L1; the plan's IDT runs train with -SSIM: the bench specs put L1 back (and nothing else)."""
    plans = papers.build_all("full")
    runs = [r for p in plans for r in p.runs()]
    idt = [(b, s) for b, s in cost.bench_specs(runs) if b.net == "IDT"]
    assert len(idt) == 2 and len(cost.bench_specs(runs)) == len(cost.BENCH_POINTS)
    for b, s in idt:
        assert {t.name for t in s.terms} == set(b.terms) and s.schedule.rec == "l1"
        assert (s.schedule.batch, s.schedule.patch) == (b.batch, b.patch)
    assert all(r.terms[0].name == "neg_ssim" for r in runs if r.net == "IDT")
