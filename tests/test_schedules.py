"""Original training schedules (full profile): the verified numbers, every decay kind's learning-rate curve
against independently computed values (and torch's own schedulers where the release uses them), and the wiring
into train_eval."""
import dataclasses
import math

import pytest
import torch

from irlib import metrics
from irlib.losses import LOSSES
from irlib.models.nafnet import NAFNet
from irlib.schedules import ORIGINAL, Schedule, iters_per_epoch, original

KEYS = {
    "EDSR-light x2", "EDSR-light x4", "SwinIR-light x4", "SwinIR x4",
    "FFANet ITS", "FFANet ITS SPN-release", "FFANet RESIDE-6K",
    "DehazeFormer-T ITS", "DehazeFormer-S ITS", "DehazeFormer-B ITS",
    "DehazeFormer-T RESIDE-6K", "DehazeFormer-S RESIDE-6K", "DehazeFormer-B RESIDE-6K",
    "NAFNet GoPro", "IDT Rain100L", "IDT Rain100H", "IDT DID", "IDT DDN", "IDT SPA",
    "TextPromptIR all-in-one", "TextPromptIR single-task", "DINO-IR multi-task", "DINO-IR single-task",
    "DiffLoss", "CUB classifier",
    "DnCNN DINO-IR mix", "MPRNet DINO-IR mix", "NAFNet DINO-IR mix", "AirNet DINO-IR mix", "PromptIR DINO-IR mix",
}


def torch_lrs(make, n: int, per: int = 1) -> list[float]:
    """The learning rate torch's scheduler ``make(opt)`` gives each of ``n`` steps, stepped every ``per`` steps."""
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sch = make(opt)
    out = []
    for s in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        if (s + 1) % per == 0:
            sch.step()
    return out


def test_every_key_is_documented_and_sane():
    assert set(ORIGINAL) == KEYS
    for key, s in ORIGINAL.items():
        assert s.source.strip(), key
        assert s.steps > 0 and s.batch > 0 and s.patch > 0 and s.lr > 0, key
        assert s.rec in LOSSES or key == "CUB classifier", (key, s.rec)
        hash(s)  # frozen and hashable: usable inside RunSpec keys
        with pytest.raises(dataclasses.FrozenInstanceError):
            s.steps = 1
        assert 0 <= s.lr_at(s.steps - 1) <= s.lr * (1 + 1e-12), key
    for key in ("FFANet RESIDE-6K", "IDT SPA", "CUB classifier"):  # nothing published: documented choices
        assert ORIGINAL[key].source.startswith("irlib choice:"), key
    for key in ("TextPromptIR all-in-one", "TextPromptIR single-task", "DINO-IR multi-task", "DiffLoss"):
        assert "irlib choice" in ORIGINAL[key].source, key  # paper numbers plus a stated choice for the rest
    assert ORIGINAL["CUB classifier"].rec == "cross_entropy"


def test_dinoir_comparison_schedules_follow_their_releases():
    """DINO-IR's comparison methods, each with its release's optimiser and lr curve, epochs over DINO-IR's mix."""
    from irlib.schedules import DINOIR_MIX_EPOCH, iters_per_epoch

    dn, mpr, naf, pir = (ORIGINAL[f"{n} DINO-IR mix"] for n in ("DnCNN", "MPRNet", "NAFNet", "PromptIR"))
    assert (dn.batch, dn.patch, dn.lr, dn.rec) == (64, 40, 1e-4, "l1") and dn.lr_at(199_999) == 1e-4
    assert dn.lr_at(200_000) == 5e-5                                   # KAIR's first MultiStepLR milestone
    it = iters_per_epoch(DINOIR_MIX_EPOCH, 16, drop_last=False)       # MPRNet's DataLoader keeps the last batch
    assert it == 2500 and mpr.steps == 250 * it and mpr.rec == "charbonnier" and mpr.lr_at(3 * it) == 2e-4
    assert mpr.lr_at(mpr.steps - 1) == pytest.approx(1e-6, rel=0.01)   # cosine down to LR_MIN
    assert (naf.optimizer, naf.betas, naf.rec, naf.steps, naf.batch) == ("adamw", (0.9, 0.9), "psnr", 200_000, 32)
    assert naf.lr_at(100_000) == pytest.approx((1e-3 + 1e-7) / 2)
    pit = iters_per_epoch(DINOIR_MIX_EPOCH, 32)
    assert pir.steps == 120 * pit and (pir.optimizer, pir.weight_decay, pir.warmup, pir.t_max) == ("adamw", 0.01, 15, 150)
    assert pir.lr_at(15 * pit) == 2e-4 and pir.lr_at(0) == 0.0


def test_original_lookup_names_the_known_keys():
    assert original("NAFNet GoPro") is ORIGINAL["NAFNet GoPro"]
    with pytest.raises(KeyError, match="NAFNet GoPro") as err:
        original("NAFNet")
    assert "no original schedule 'NAFNet'" in str(err.value)


def test_numbers_from_the_releases_and_papers():
    naf = ORIGINAL["NAFNet GoPro"]  # NAFNet-width32.yml
    assert (naf.steps, naf.batch, naf.patch, naf.lr) == (200_000, 8 * 4, 256, 1e-3)
    assert (naf.optimizer, naf.betas, naf.weight_decay) == ("adamw", (0.9, 0.9), 1e-3)
    assert (naf.rec, naf.grad_clip, naf.eta_min) == ("psnr", 0.01, 1e-7)
    for key, batch, patch in (("SwinIR-light x4", 64, 4 * 64), ("SwinIR x4", 32, 4 * 48)):  # KAIR json
        s = ORIGINAL[key]
        assert (s.steps, s.batch, s.patch, s.lr, s.ema, s.gamma) == (500_000, batch, patch, 2e-4, 0.999, 0.5)
        assert s.milestones == (250_000, 400_000, 450_000, 475_000) and s.weight_decay == 0 and s.grad_clip is None
    for key, patch in (("EDSR-light x2", 2 * 48), ("EDSR-light x4", 4 * 48)):  # EDSR-PyTorch: 300 x 1000 batches
        s = ORIGINAL[key]
        assert (s.steps, s.batch, s.patch, s.lr) == (300 * 1000, 16, patch, 1e-4)
        assert (s.milestones, s.gamma, s.optimizer) == ((200_000,), 0.5, "adam")
    ffa = ORIGINAL["FFANet ITS"]
    assert (ffa.steps, ffa.batch, ffa.patch, ffa.lr, ffa.decay, ffa.eta_min) == (500_000, 2, 240, 1e-4, "cosine", 0.0)
    spn = ORIGINAL["FFANet ITS SPN-release"]
    assert (spn.steps, spn.batch, spn.patch, spn.lr, spn.t_max, spn.ema) == (500_000, 4, 128, 2e-4, 100_000, 0.999)
    # DehazeFormer: drop_last batches of ITS (13,990) / RESIDE-6K (6,000), range(epochs + 1) epochs, eta_min = lr/100
    for key, n, batch, lr, epochs in (("DehazeFormer-T ITS", 13_990, 32, 4e-4, 300),
                                      ("DehazeFormer-S ITS", 13_990, 16, 2e-4, 300),
                                      ("DehazeFormer-B ITS", 13_990, 16, 2e-4, 300),
                                      ("DehazeFormer-T RESIDE-6K", 6_000, 32, 2e-4, 1000),
                                      ("DehazeFormer-S RESIDE-6K", 6_000, 16, 1e-4, 1000),
                                      ("DehazeFormer-B RESIDE-6K", 6_000, 16, 1e-4, 1000)):
        s = ORIGINAL[key]
        assert (s.batch, s.patch, s.lr, s.optimizer, s.weight_decay) == (batch, 256, lr, "adamw", 0.01), key
        assert s.tick == math.floor(n / batch) and s.steps == (epochs + 1) * math.floor(n / batch), key
        assert s.t_max == epochs and s.eta_min == pytest.approx(lr / 100), key
    assert ORIGINAL["DehazeFormer-T ITS"].steps == 301 * 437
    assert ORIGINAL["DehazeFormer-S RESIDE-6K"].steps == 1001 * 375
    for key, n in (("IDT Rain100L", 1800), ("IDT Rain100H", 1800), ("IDT DID", 12_000), ("IDT DDN", 12_600)):
        s = ORIGINAL[key]  # train_derain.py: 400 epochs of ceil(n/4) batches, x0.1 at epochs 100/250/350
        assert (s.batch, s.patch, s.lr, s.gamma, s.milestones) == (4, 128, 1e-4, 0.1, (100, 250, 350)), key
        assert s.tick == math.ceil(n / 4) and s.steps == 400 * math.ceil(n / 4), key
    tp = ORIGINAL["TextPromptIR all-in-one"]  # paper Sec. 4.1.2 + release scheduler
    assert (tp.batch, tp.patch, tp.lr, tp.rec) == (6, 128, 2e-4, "l1")
    assert (tp.optimizer, tp.betas, tp.weight_decay) == ("adam", (0.9, 0.999), 1e-4)
    per_epoch = (5144 * 9 + 200 * 200 + 72_135) // 6
    assert per_epoch == 26_405 and tp.tick == per_epoch and tp.steps == 120 * per_epoch
    assert (tp.warmup, tp.t_max) == (15, 150) and ORIGINAL["TextPromptIR single-task"] == tp
    multi, single = ORIGINAL["DINO-IR multi-task"], ORIGINAL["DINO-IR single-task"]
    assert (multi.batch, multi.patch, single.batch, single.patch) == (8, 160, 4, 128)
    assert multi.lr == single.lr == 2e-4 and multi.eta_mins[-1] == 1e-4 and multi.optimizer == "adam"
    dl = ORIGINAL["DiffLoss"]
    assert (dl.steps, dl.batch, dl.patch, dl.lr) == (40_000, 4, 256, 1e-4)
    assert (dl.optimizer, dl.decay, dl.rec) == ("adam", "none", "mse")
    cub = ORIGINAL["CUB classifier"]  # irlib.classify.finetune defaults: 5 epochs, batch 32, SGD 0.01
    assert (cub.steps, cub.batch, cub.patch, cub.lr) == (5 * (5994 // 32), 32, 224, 0.01)
    assert (cub.optimizer, cub.momentum, cub.weight_decay) == ("sgd", 0.9, 1e-4)


def test_step_decay():
    sw = ORIGINAL["SwinIR-light x4"]
    assert sw.lr_at(0) == 2e-4 and sw.lr_at(249_999) == 2e-4 and sw.lr_at(250_000) == 1e-4
    assert sw.lr_at(475_000) == pytest.approx(2e-4 / 16)
    idt = ORIGINAL["IDT Rain100H"]  # per-epoch MultiStepLR: 450 steps per epoch
    assert idt.lr_at(100 * 450 - 1) == 1e-4 and idt.lr_at(100 * 450) == pytest.approx(1e-5)
    assert idt.lr_at(250 * 450) == pytest.approx(1e-6) and idt.lr_at(idt.steps - 1) == pytest.approx(1e-7)
    small = Schedule(40, 1, 8, 0.5, decay="step", milestones=(3, 7), gamma=0.1, tick=4)
    ref = torch_lrs(lambda o: torch.optim.lr_scheduler.MultiStepLR(o, [3, 7], 0.1), 40, per=4)
    assert [small.lr_at(s) / 0.5 for s in range(40)] == pytest.approx(ref)


def test_cosine_over_the_run():
    naf = ORIGINAL["NAFNet GoPro"]
    assert naf.lr_at(0) == pytest.approx(1e-3) and naf.lr_at(naf.steps) == pytest.approx(1e-7)
    assert naf.lr_at(naf.steps // 2) == pytest.approx((1e-3 + 1e-7) / 2)
    assert naf.lr_at(naf.steps + 50) == pytest.approx(1e-7)  # stays at eta_min after the run
    ffa = ORIGINAL["FFANet ITS"]  # FFA-Net: lr * (1 + cos(pi * t / T)) / 2 with t counted from 1 (net/main.py:55-59)
    assert ffa.lr_at(124_999) == pytest.approx(1e-4 * (1 + math.cos(math.pi / 4)) / 2, rel=1e-9)
    assert ffa.lr_at(0) == pytest.approx(1e-4 * (1 + math.cos(math.pi / 500_000)) / 2, rel=1e-12) and ffa.lr_at(0) < 1e-4
    assert ffa.lr_at(ffa.steps - 1) == 0.0   # the release's last update runs at rate 0
    # the CUB classifier mirrors classify.finetune's CosineAnnealingLR(opt, steps)
    cub = ORIGINAL["CUB classifier"]
    ref = torch_lrs(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, cub.steps), cub.steps)
    assert [cub.lr_at(s) / cub.lr for s in range(cub.steps)] == pytest.approx(ref, abs=1e-12)


def test_per_epoch_cosine_is_a_staircase():
    d = ORIGINAL["DehazeFormer-T ITS"]  # 437 steps per epoch, T_max 300 epochs, eta_min 4e-6
    assert d.lr_at(0) == d.lr_at(436) == 4e-4
    assert d.lr_at(437) == pytest.approx(4e-6 + (4e-4 - 4e-6) * (1 + math.cos(math.pi / 300)) / 2)
    assert d.lr_at(150 * 437) == pytest.approx((4e-4 + 4e-6) / 2)
    assert d.lr_at(300 * 437) == pytest.approx(4e-6) and d.lr_at(d.steps - 1) == pytest.approx(4e-6)  # last epoch
    small = Schedule(7 * 5, 1, 8, 1.0, decay="cosine", eta_min=0.01, tick=5, t_max=6)
    ref = torch_lrs(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=6, eta_min=0.01), 35, per=5)
    assert [small.lr_at(s) for s in range(35)] == pytest.approx(ref)


def test_cosine_past_t_max_rises_again_like_torch():
    spn = ORIGINAL["FFANet ITS SPN-release"]
    assert spn.lr_at(100_000) == pytest.approx(1e-8) and spn.lr_at(200_000) == pytest.approx(2e-4)
    assert spn.lr_at(150_000) == pytest.approx((2e-4 + 1e-8) / 2) and spn.lr_at(500_000) == pytest.approx(1e-8)
    small = Schedule(50, 1, 8, 1.0, decay="cosine", eta_min=1e-3, t_max=10)
    ref = torch_lrs(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=10, eta_min=1e-3), 50)
    assert [small.lr_at(s) for s in range(50)] == pytest.approx(ref, abs=1e-9)


def test_linear_warmup_then_cosine():
    tp = ORIGINAL["TextPromptIR all-in-one"]
    e = tp.tick
    # closed form of LinearWarmupCosineAnnealingLR(warmup 15, max 150, start 0, eta_min 0), by epoch index
    assert tp.lr_at(0) == 0 and tp.lr_at(e - 1) == 0
    assert tp.lr_at(e) == pytest.approx(2e-4 / 14) and tp.lr_at(7 * e + 3) == pytest.approx(2e-4 * 7 / 14)
    assert tp.lr_at(14 * e) == pytest.approx(2e-4) and tp.lr_at(15 * e) == pytest.approx(2e-4)
    assert tp.lr_at(60 * e) == pytest.approx(2e-4 * (1 + 0.5) / 2)  # cos(pi * 45 / 135) = 1/2
    assert tp.lr_at(tp.steps - 1) == pytest.approx(1e-4 * (1 + math.cos(math.pi * 104 / 135)))  # epoch 119
    assert tp.lr_at(150 * e) == pytest.approx(0, abs=1e-18)


def test_cosine_restarts_follow_restormer():
    # swz30/Restormer Deraining_Restormer.yml: lr 3e-4, periods [92000, 208000], restart_weights [1, 1],
    # eta_mins [3e-4, 1e-6]: flat 3e-4 for 92K steps, then a cosine to 1e-6
    r = Schedule(300_000, 8, 128, 3e-4, decay="cosine_restarts", periods=(92_000, 208_000),
                 restart_weights=(1, 1), eta_mins=(3e-4, 1e-6))
    assert r.lr_at(0) == r.lr_at(50_000) == r.lr_at(92_000) == pytest.approx(3e-4)
    assert r.lr_at(92_000 + 104_000) == pytest.approx(1e-6 + 0.5 * (3e-4 - 1e-6))
    assert r.lr_at(300_000) == pytest.approx(1e-6) and r.lr_at(400_000) == pytest.approx(1e-6)
    dino = ORIGINAL["DINO-IR multi-task"]
    assert dino.lr_at(92_000) == pytest.approx(2e-4) and dino.lr_at(196_000) == pytest.approx(1.5e-4)
    assert dino.lr_at(dino.steps) == pytest.approx(1e-4)
    w = Schedule(20, 1, 8, 1.0, decay="cosine_restarts", periods=(10, 10), restart_weights=(1, 0.5), eta_mins=(0, 0))
    assert w.lr_at(10) == pytest.approx(0, abs=1e-15)  # a cycle's last tick belongs to it
    assert w.lr_at(11) == pytest.approx(0.5 * 0.5 * (1 + math.cos(math.pi / 10)))  # restart at half weight


def test_torch_scheduler_follows_lr_at():
    s = Schedule(12, 1, 8, 0.1, decay="warmup_cosine", warmup=3, t_max=6, tick=2, eta_min=0.01)
    opt = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=s.lr)
    sch = s.scheduler(opt)
    for step in range(12):
        assert opt.param_groups[0]["lr"] == pytest.approx(s.lr_at(step), abs=1e-15)
        opt.step()
        sch.step()


def test_epoch_conversion_and_validation():
    assert iters_per_epoch(13_990, 32) == 437 and iters_per_epoch(13_990, 32, drop_last=False) == 438
    assert Schedule(5, 1, 8, 1.0, milestones=[1, 2], betas=[0.9, 0.99]).milestones == (1, 2)  # JSON lists -> tuples
    with pytest.raises(ValueError, match="decay"):
        Schedule(5, 1, 8, 1.0, decay="linear")
    with pytest.raises(ValueError, match="warmup"):
        Schedule(5, 1, 8, 1.0, decay="warmup_cosine", warmup=3)
    with pytest.raises(ValueError, match="cosine_restarts"):
        Schedule(5, 1, 8, 1.0, decay="cosine_restarts", periods=(2, 3), restart_weights=(1,), eta_mins=(0, 0))
    with pytest.raises(ValueError, match="steps"):
        Schedule(0, 1, 8, 1.0)
    with pytest.raises(ValueError, match="optimizer"):
        Schedule(5, 1, 8, 1.0, optimizer="rmsprop")


def test_psnr_loss_is_minus_psnr():
    g = torch.Generator().manual_seed(0)
    gt = torch.rand(3, 3, 16, 16, generator=g)
    out = (gt + 0.05 * torch.randn(3, 3, 16, 16, generator=g)).clamp(0, 1)
    want = -metrics.psnr(out, gt, quantize=False).mean()
    assert float(LOSSES["psnr"](out, {"gt": gt})) == pytest.approx(float(want), abs=1e-4)


def test_runs_follow_their_schedule():
    from irlib.data import PatchBatches, sample_images
    from irlib.engine.jobs import build_trainer

    sch = Schedule(4, 2, 16, 1e-3, optimizer="adamw", betas=(0.9, 0.9), weight_decay=0.01, decay="step", milestones=(2,))
    torch.manual_seed(0)
    batches = PatchBatches(list(sample_images(32).values())[:3], sch.patch, sch.batch, ("noise25",))
    tr = build_trainer(sch, NAFNet(8, (1, 1, 1, 1)), {"psnr": (1.0, LOSSES["psnr"])}, batches, progress=False)
    tr.fit(sch.steps)
    assert tr.step == 4 and isinstance(tr.opt, torch.optim.AdamW)
    assert tr.opt.param_groups[0]["lr"] == pytest.approx(5e-4) and tr.opt.param_groups[0]["betas"] == (0.9, 0.9)
    assert tr.opt.param_groups[0]["weight_decay"] == 0.01
    assert tr.batches(0)["gt"].shape == (2, 3, 16, 16) and tr.grad_clip is None
    with pytest.raises(ValueError, match="adam or adamw"):
        build_trainer(Schedule(1, 2, 16, 1e-3, optimizer="sgd", momentum=0.9), NAFNet(8, (1, 1, 1, 1)),
                      {"l1": (1.0, LOSSES["l1"])}, batches)

def airnet_release_lrs(epochs: int = 1000) -> list[float]:
    """The learning rate each epoch of AirNet's release uses: it starts at opt.lr = 1e-3 and, after every epoch,
    sets lr = 1e-3 * 0.1 ** (epoch // 60) while epoch <= epochs_encoder (100), else 1e-4 * 0.5 ** ((epoch - 100) //
    125) (XLearning-SCU/2022-CVPR-AirNet@bedea82 train.py:77-84, tests/fixtures/release/airnet.json)."""
    lr, used = 1e-3, []
    for epoch in range(epochs):
        used.append(lr)
        lr = 1e-3 * 0.1 ** (epoch // 60) if epoch <= 100 else 1e-4 * 0.5 ** ((epoch - 100) // 125)
    return used


def test_piecewise_follows_airnets_per_epoch_rule():
    s = ORIGINAL["AirNet DINO-IR mix"]
    assert (s.decay, s.tick, s.steps, s.batch, s.patch, s.lr) == ("piecewise", 400, 400_000, 6, 128, 1e-3)
    # a hand-computed table of the release's rule: epoch -> the rate that epoch trains with
    table = {0: 1e-3, 1: 1e-3, 60: 1e-3, 61: 1e-4, 99: 1e-4, 100: 1e-4, 101: 1e-4, 102: 1e-4, 225: 1e-4, 226: 5e-5,
             350: 5e-5, 351: 2.5e-5, 475: 2.5e-5, 476: 1.25e-5, 999: 1e-4 / 2 ** 7}
    for epoch, lr in table.items():
        for step in (epoch * 400, epoch * 400 + 399):   # constant within the 400 steps of an epoch
            assert s.lr_at(step) == pytest.approx(lr, rel=1e-12), (epoch, step)
    release = airnet_release_lrs()
    assert [s.lr_at(e * 400) for e in range(1000)] == pytest.approx(release, rel=1e-12)
    assert [release[e] for e in table] == pytest.approx(list(table.values()), rel=1e-12)
    # the trainer's scheduler follows it (per step, as a factor of the base rate) across the epoch boundary
    lrs = torch_lrs(s.scheduler, 61 * 400 + 2)
    assert lrs[61 * 400 - 1] * s.lr == pytest.approx(1e-3) and lrs[61 * 400] * s.lr == pytest.approx(1e-4)


def test_piecewise_validation_and_key():
    from irlib.engine.spec import canonical_json

    seg = ((0, 1e-3, 1.0, 1), (5, 1e-4, 0.5, 2))
    s = Schedule(100, 2, 16, 1e-3, decay="piecewise", segments=seg)
    assert [s.lr_at(t) for t in (0, 4, 5, 6, 7, 9)] == pytest.approx([1e-3, 1e-3, 1e-4, 1e-4, 5e-5, 2.5e-5])
    assert Schedule(100, 2, 16, 1e-3, decay="piecewise", segments=[list(x) for x in seg]) == s   # from JSON
    for bad in ((), ((1, 1e-3, 1.0, 1),), ((0, 1e-3, 1.0, 1), (0, 1e-4, 1.0, 1)), ((0, 1e-3, 1.0, 0),),
                ((0, -1e-3, 1.0, 1),)):
        with pytest.raises(ValueError, match="piecewise"):
            Schedule(100, 2, 16, 1e-3, decay="piecewise", segments=bad)
    with pytest.raises(ValueError, match="segments"):
        Schedule(100, 2, 16, 1e-3, decay="step", segments=seg)
    # an empty ``segments`` is left out of a run's key: schedules planned before it existed keep their keys
    assert "segments" not in canonical_json(ORIGINAL["NAFNet GoPro"])
    assert "segments" in canonical_json(s)


def test_tick_offset_shifts_every_rule_and_stays_out_of_old_keys():
    from irlib.engine.spec import canonical_json

    base = Schedule(8, 1, 8, 1.0, decay="cosine")
    shifted = Schedule(8, 1, 8, 1.0, decay="cosine", tick_offset=1)
    assert [shifted.lr_at(s) for s in range(7)] == [base.lr_at(s + 1) for s in range(7)]
    assert shifted.lr_at(7) == base.lr_at(8) == 0.0 and base.lr_at(0) == 1.0
    per_epoch = Schedule(12, 1, 8, 1.0, decay="step", milestones=(2,), gamma=0.1, tick=4, tick_offset=1)
    assert [per_epoch.lr_at(s) for s in range(12)] == pytest.approx([1.0] * 4 + [0.1] * 8)
    assert "tick_offset" not in canonical_json(base) and "tick_offset" in canonical_json(shifted)
    assert canonical_json(shifted) != canonical_json(base)
    with pytest.raises(ValueError, match="tick_offset"):
        Schedule(8, 1, 8, 1.0, tick_offset=-1)
