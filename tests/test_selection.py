"""Best-checkpoint selection rules (``RunSpec.select``): PSNR alone (EDSR-PyTorch, DehazeFormer, DiffLoss) and FFA-Net's
"PSNR and SSIM both improve" (zhilin007/FFA-Net net/main.py line 96), and the plan's use of them."""
import math

import pytest

from irlib import plan
from irlib.engine.jobs import improves, pick
from irlib.engine.recipe import recipe

# (PSNR, SSIM) of successive evaluations. PSNR alone keeps the 4th (31.5 dB); FFA-Net keeps the 3rd: the 2nd has
# the higher PSNR but a lower SSIM than the kept 1st, and the 4th a lower SSIM than the kept 3rd.
SCORES = [(30.0, 0.900), (31.0, 0.890), (30.5, 0.910), (31.5, 0.905), (29.0, 0.950)]


def test_the_two_rules_keep_different_checkpoints():
    assert pick("psnr", SCORES) == 3
    assert pick("psnr_and_ssim", SCORES) == 2


def test_both_rule_compares_with_the_kept_checkpoint_not_the_running_maxima():
    # the 2nd raises max PSNR in a running-maximum reading, but FFA-Net updates its maxima only when it saves:
    # the 3rd (30.8 > 30.0 kept, 0.91 > 0.90) is saved although 30.8 < 31.0
    assert pick("psnr_and_ssim", [(30.0, 0.90), (31.0, 0.80), (30.8, 0.91)]) == 2
    assert pick("psnr", [(30.0, 0.90), (31.0, 0.80), (30.8, 0.91)]) == 1


def test_ties_and_nans_do_not_replace_and_first_evaluation_is_kept():
    assert improves("psnr_and_ssim", None, 10.0, 0.1)
    assert not improves("psnr_and_ssim", (30.0, 0.9), 30.0, 0.95)      # strictly greater, both
    assert not improves("psnr", (30.0, 0.9), 30.0, 0.95)
    assert not improves("psnr_and_ssim", None, 30.0, math.nan)
    assert pick("psnr", [(math.nan, 0.5)]) is None
    with pytest.raises(ValueError, match="unknown selection rule"):
        improves("ssim", None, 1.0, 1.0)


def test_ffanet_runs_select_by_both_and_dehazeformer_by_psnr():
    p = plan.build("spn", "full")
    evals = p.evals()
    ffa = [r for r in p.runs() if r.net == "FFANet"]
    df = [r for r in p.runs() if r.net.startswith("DehazeFormer")]
    assert ffa and df
    for r in ffa:
        assert dict(r.select)["rule"] == "psnr_and_ssim" and int(dict(r.select)["best_every"]) == 5000
        assert recipe(r, evals.get(r.key(), ()))["select"].startswith("best PSNR and SSIM every 5000 steps on reside_")
    for r in df:
        assert "rule" not in dict(r.select)
        assert recipe(r, evals.get(r.key(), ()))["select"].startswith("best PSNR every ")


def test_edsr_light_selects_on_div2k_0801_0810_as_edsr_pytorch_measures_it():
    from irlib.engine.jobs import select_eval

    p = plan.build("spn", "full")
    edsr = [r for r in p.runs() if r.net == "EDSR-light"]
    assert len(edsr) >= 10
    for r in edsr:
        s = dict(r.net_kw)["scale"]
        sel = dict(r.select)
        assert sel["on"].dataset == f"div2k:valid-x{s}" and int(sel["best_every"]) == 1000 and "rule" not in sel
        ev = select_eval(r)
        assert (ev.channel, ev.crop, ev.quantize, ev.testset) == ("rgb", s + 6, True, sel["on"])
    ffa = next(r for r in p.runs() if r.net == "FFANet")
    assert select_eval(ffa).channel == "rgb" and select_eval(ffa).crop == 0   # no convention given: the default


@pytest.mark.parametrize("rule", ["psnr", "psnr_and_ssim"])
def test_a_trained_run_keeps_the_checkpoint_its_rule_picks(tmp_path, rule):
    from irlib.engine import Builder, EvalSpec, Profile, RunStore
    from irlib.schedules import Schedule

    P = Profile("smoke", "tiny", "random", smoke_schedule=Schedule(6, 2, 32, 3e-3), scale="tiny")
    B = Builder("spn", P)
    ts = B.testset("div2k:valid-x4", "srx4")
    run = B.run("EDSR-light", net_kw={"scale": 4}, train=[("div2k:train-x4", "srx4")], schedule=P.smoke_schedule,
                select={"best_every": 1, "on": ts, "rule": rule, "eval": EvalSpec(ts, channel="rgb", crop=10, quantize=True)})
    B.measure("Table 8", "EDSR-light", "lambda=0", "Set14", (run,), EvalSpec(ts, channel="rgb", crop=10, quantize=True),
              ("PSNR",))
    store = RunStore(tmp_path / "runs")
    assert list(plan.execute(B.plan, store, plan.Context("data", store.root)).state) == ["done"]
    done = store.done(run.key())
    evals = done["selection"]["evaluations"]
    assert done["selection"]["rule"] == rule and [e[0] for e in evals] == list(range(1, 7))
    assert done["best_step"] == evals[pick(rule, [(p_, s_) for _, p_, s_ in evals])][0]
