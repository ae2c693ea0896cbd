"""Original training schedules (full profile) and their wiring into train_eval."""
import math

import pytest
import torch

from irlib import experiment as ex, metrics
from irlib.losses import LOSSES
from irlib.models.nafnet import NAFNet
from irlib.schedules import ORIGINAL, Schedule


def test_step_and_cosine_learning_rates():
    sw = ORIGINAL["SwinIR-light"]
    assert sw.lr_at(0) == 2e-4 and sw.lr_at(249_999) == 2e-4 and sw.lr_at(250_000) == 1e-4
    assert sw.lr_at(475_000) == pytest.approx(2e-4 / 16)
    naf = ORIGINAL["NAFNet"]
    assert naf.lr_at(0) == pytest.approx(1e-3) and naf.lr_at(naf.steps) == pytest.approx(1e-7)
    assert naf.lr_at(naf.steps // 2) == pytest.approx((1e-3 + 1e-7) / 2)
    assert ORIGINAL["DehazeFormer-T"].steps == 300 * math.ceil(13_990 / 32)  # 300 epochs of ITS at batch 32
    assert ORIGINAL["SwinIR-light"].patch == 4 * 64 and ORIGINAL["EDSR-light"].patch == 4 * 48


def test_psnr_loss_is_minus_psnr():
    g = torch.Generator().manual_seed(0)
    gt = torch.rand(3, 3, 16, 16, generator=g)
    out = (gt + 0.05 * torch.randn(3, 3, 16, 16, generator=g)).clamp(0, 1)
    want = -metrics.psnr(out, gt, quantize=False).mean()
    assert float(LOSSES["psnr"](out, {"gt": gt})) == pytest.approx(float(want), abs=1e-4)


def test_train_eval_follows_a_schedule():
    P = ex.get_profile("smoke")
    train, test = ex.offline_split(P)
    sch = Schedule(4, 2, 16, 1e-3, optimizer="adamw", betas=(0.9, 0.9), weight_decay=0.01, decay="step", milestones=(2,))
    torch.manual_seed(0)
    df, tr = ex.train_eval(NAFNet(8, (1, 1, 1, 1)), {"psnr": (1.0, LOSSES["psnr"])}, train, ["noise25"],
                           ex.test_set(test, "noise25"), P, 0, pad_to=16, schedule=sch)
    assert tr.step == 4 and isinstance(tr.opt, torch.optim.AdamW)
    assert tr.opt.param_groups[0]["lr"] == pytest.approx(5e-4) and tr.opt.param_groups[0]["betas"] == (0.9, 0.9)
    assert tr.batches(0)["gt"].shape == (2, 3, 16, 16) and tr.grad_clip is None
    assert len(df) == len(test)
    with pytest.raises(ValueError, match="adam or adamw"):
        ex.train_eval(NAFNet(8, (1, 1, 1, 1)), {"l1": (1.0, LOSSES["l1"])}, train, ["noise25"], [], P, 0,
                      schedule=Schedule(1, 2, 16, 1e-3, optimizer="sgd"))
