"""Training equivalence with a release: irlib's whole training-step loop reproduces FFA-Net's own.

tests/fixtures/equivalence/ffanet_steps.json records what zhilin007/FFA-Net's ``net/main.py`` loop (its Adam, its
per-step cosine rate, its L1 loss, its input normalisation) did for 4 steps on fixed batches from fixed initial
weights: the per-step losses, rates and checksums of the final weights. Here the full plan's FFANet run is turned
into a trainer the way the run store does (:func:`irlib.engine.jobs.build_trainer`), with only steps, batch,
patch and the network's block count made small, and must give the same numbers.
"""
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from irlib import plan
from irlib.engine.jobs import build_trainer, torch_threads
from irlib.engine.runner import build_model, build_terms, effective_schedule

FIX = json.loads((Path(__file__).parent / "fixtures" / "equivalence" / "ffanet_steps.json").read_text())
CFG = FIX["config"]


def _plan_run():
    """The full SPN plan's FFANet (ITS) baseline run, with only the sizes of this check changed."""
    runs = [r for r in plan.build("spn", "full").runs()
            if r.net == "FFANet" and [t.name for t in r.terms] == ["l1"]
            and any(s.dataset.startswith("reside_its") for s in r.train)]
    assert runs, "the full SPN plan has no FFANet ITS baseline run"
    run = runs[0]
    sched = dataclasses.replace(run.schedule, steps=CFG["steps"], batch=CFG["batch"], patch=CFG["side"])
    return run.replace(schedule=sched, net_kw=(("blocks", CFG["blocks"]),))


def _batches() -> list[dict]:
    rng = np.random.default_rng(FIX["batches"]["seed"])
    shape = (CFG["batch"], 3, CFG["side"], CFG["side"])
    out = []
    for _ in range(CFG["steps"]):
        lq = rng.random(shape, dtype=np.float32)
        gt = rng.random(shape, dtype=np.float32)
        out.append({"lq": torch.from_numpy(lq), "gt": torch.from_numpy(gt)})
    return out


@pytest.fixture(scope="module")
def trained():
    run = _plan_run()
    sched = effective_schedule(run)
    torch.manual_seed(FIX["init"]["torch_seed"])
    model = build_model(run, fb=None)
    init = {k: v.detach().clone().double() for k, v in model.state_dict().items()}
    terms = build_terms(run, model, fb=None, load_run=None)
    data = _batches()
    lrs: list[float] = []

    def batches(step: int) -> dict:
        """The step's fixed batch; records the rate the optimiser holds for this step's update."""
        lrs.append(tr.opt.param_groups[0]["lr"])
        return data[step]

    tr = build_trainer(sched, model, terms, batches, progress=False)
    with torch_threads(1):   # as the release run was recorded (and as a run-store job with 1 thread computes)
        log = tr.fit(sched.steps)
    return run, init, model, log, lrs


def test_the_check_drives_the_plans_recipe(trained):
    run, _, model, _, _ = trained
    assert run.schedule.optimizer == "adam" and run.schedule.decay == "cosine" and [t.name for t in run.terms] == ["l1"]
    assert (model.n, model.dim, len(model.g1.gp) - 1, model.input_norm) == (CFG["gps"], CFG["dim"], CFG["blocks"], True)
    assert set(model.state_dict()) == set(FIX["recorded"]["checksums"])   # the release's parameter names


def test_learning_rates_match_the_release(trained):
    _, _, _, _, lrs = trained
    np.testing.assert_allclose(lrs, FIX["recorded"]["lrs"], rtol=1e-6, atol=1e-12)


def test_losses_match_the_release(trained):
    _, _, _, log, _ = trained
    np.testing.assert_allclose(log["loss"].to_numpy(), FIX["recorded"]["losses"], rtol=1e-5)


def test_final_weights_match_the_release(trained):
    _, init, model, _, _ = trained
    bad = []
    for k, v in model.state_dict().items():
        v = v.detach().double()
        d = v - init[k]
        mine = {"sum": float(v.sum()), "sumsq": float((v * v).sum()),
                "delta_sum": float(d.sum()), "delta_sumsq": float((d * d).sum())}
        ref = FIX["recorded"]["checksums"][k]
        scale = {"sum": float(v.abs().sum()), "sumsq": mine["sumsq"], "delta_sum": float(d.abs().sum()),
                 "delta_sumsq": mine["delta_sumsq"]}
        for name, x in mine.items():
            if abs(x - ref[name]) > 1e-5 * scale[name] + 1e-12:
                bad.append(f"{k}.{name}: {x!r} vs release {ref[name]!r}")
    assert not bad, "\n".join(bad[:20])
