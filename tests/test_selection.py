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
