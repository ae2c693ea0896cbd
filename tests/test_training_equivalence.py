"""Training equivalence with a release: irlib's whole training-step loop reproduces FFA-Net's and DehazeFormer's own.

tests/fixtures/equivalence/ffanet_steps.json records what zhilin007/FFA-Net's ``net/main.py`` loop (its Adam, its
per-step cosine rate, its L1 loss, its input normalisation) did for 4 steps on fixed batches from fixed initial
weights: the per-step losses, rates and checksums of the final weights. Here the full plan's FFANet run is turned
into a trainer the way the run store does (:func:`irlib.engine.jobs.build_trainer`), with only steps, batch,
patch and the network's block count made small, and must give the same numbers.

tests/fixtures/equivalence/dehazeformer_steps.json does the same for IDKiro/DehazeFormer's ``train.py`` (AdamW at
torch's defaults, CosineAnnealingLR to lr/100 stepped once per epoch over ``range(epochs + 1)`` epochs, L1 on [-1, 1]
images): 3 epochs of 2 fixed batches each, so the per-epoch rate changes twice within the 6 steps. The full plan's
DehazeFormer-T (ITS) run keeps everything but its sizes and run length (steps, batch, patch, steps per epoch,
epochs) and a tiny network; its fp16 autocast trains fp32 on a CPU, as the release's run was recorded.

tests/fixtures/equivalence/nafnet_steps.json does the same for megvii-research/NAFNet's ``basicsr/train.py`` with
options/train/GoPro/NAFNet-width32.yml (AdamW betas (0.9, 0.9) weight decay 1e-3, torch's CosineAnnealingLR stepped
per iteration from the second on with T_max = total_iter, PSNRLoss, gradient norm clipped to 0.01): 5 steps, the rate
changing on each. The full plan's NAFNet (GoPro) run keeps everything but steps, batch, patch and a tiny network. The
release trains NAFNetLocal (TLC pooling), irlib NAFNet: the same computation at patches up to 256 (a test shows it).
"""
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from irlib import plan
from irlib.engine.jobs import build_trainer, run_precision, torch_threads
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


def _batches(seed: int | None = None, cfg: dict | None = None) -> list[dict]:
    """The fixed (lq, gt) batches both loops trained on: uniform draws from ``seed``, lq then gt per step."""
    seed, cfg = (FIX["batches"]["seed"], CFG) if cfg is None else (seed, cfg)
    rng = np.random.default_rng(seed)
    shape = (cfg["batch"], 3, cfg["side"], cfg["side"])
    out = []
    for _ in range(cfg["steps"]):
        lq = rng.random(shape, dtype=np.float32)
        gt = rng.random(shape, dtype=np.float32)
        out.append({"lq": torch.from_numpy(lq), "gt": torch.from_numpy(gt)})
    return out


def _build(run, torch_seed: int, fb=None):
    """``run``'s network drawn after ``torch.manual_seed(torch_seed)`` (the recorded initial weights), those
    weights in float64, and its loss terms: ``(model, init, terms)``."""
    torch.manual_seed(torch_seed)
    model = build_model(run, fb)
    init = {k: v.detach().clone().double() for k, v in model.state_dict().items()}
    return model, init, build_terms(run, model, fb=fb, load_run=None)


def _fit(run, model, terms, data: list[dict]):
    """Train ``model`` through the run store's trainer on the fixed batches ``data`` with one thread, as the release
    runs were recorded (and as a run-store job with 1 thread computes); ``(log, lrs, trainer)``, ``lrs`` being the
    rate the optimiser holds for each step's update."""
    sched = effective_schedule(run)
    lrs: list[float] = []

    def batches(step: int) -> dict:
        lrs.append(tr.opt.param_groups[0]["lr"])
        return data[step]

    ran = run_precision(run.precision, "cpu")
    tr = build_trainer(sched, model, terms, batches, progress=False, amp="fp16" if ran == "fp16" else None)
    with torch_threads(1):
        log = tr.fit(sched.steps)
    return log, lrs, tr


@pytest.fixture(scope="module")
def trained():
    run = _plan_run()
    model, init, terms = _build(run, FIX["init"]["torch_seed"])
    log, lrs, _ = _fit(run, model, terms, _batches())
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
    bad = _checksum_mismatches(model.state_dict(), init, FIX["recorded"]["checksums"])
    assert not bad, "\n".join(bad[:20])


def _checksum_mismatches(final: dict, init: dict, ref_all: dict, rtol: float = 1e-5) -> list[str]:
    """Final-weight checksums (float64 sum, sum of squares, and of the change from ``init``) of the tensors in
    ``final`` that differ from the release's (``ref_all``, same names) by more than ``rtol`` of the matching absolute
    sum."""
    bad = []
    assert set(final) == set(ref_all)
    for k, v in final.items():
        v = v.detach().double()
        d = v - init[k]
        mine = {"sum": float(v.sum()), "sumsq": float((v * v).sum()),
                "delta_sum": float(d.sum()), "delta_sumsq": float((d * d).sum())}
        ref = ref_all[k]
        scale = {"sum": float(v.abs().sum()), "sumsq": mine["sumsq"], "delta_sum": float(d.abs().sum()),
                 "delta_sumsq": mine["delta_sumsq"]}
        for name, x in mine.items():
            if abs(x - ref[name]) > rtol * scale[name] + 1e-12:
                bad.append(f"{k}.{name}: {x!r} vs release {ref[name]!r}")
    return bad


# ---------------------------------------------------------------------------------------------- DehazeFormer
DF = json.loads((Path(__file__).parent / "fixtures" / "equivalence" / "dehazeformer_steps.json").read_text())
DF_CFG = DF["config"]


def _df_plan_run():
    """The full SPN plan's DehazeFormer-T (ITS) baseline run, with only sizes and run length changed: a tiny
    network, batch, patch, and ``epochs_setting + 1`` epochs of ``steps_per_epoch`` steps (train.py's
    ``range(epochs + 1)`` with ``T_max = epochs``)."""
    runs = [r for r in plan.build("spn", "full").runs()
            if r.net == "DehazeFormer-T" and [t.name for t in r.terms] == ["l1_pm1"]
            and any(s.dataset.startswith("reside_its") for s in r.train)]
    assert runs, "the full SPN plan has no DehazeFormer-T ITS baseline run"
    run = runs[0]
    it, epochs = DF_CFG["steps_per_epoch"], DF_CFG["epochs_setting"]
    sched = dataclasses.replace(run.schedule, steps=(epochs + 1) * it, batch=DF_CFG["batch"], patch=DF_CFG["side"],
                                tick=it, t_max=epochs)
    kw = tuple((k, tuple(v)) for k, v in DF_CFG["net_kw"].items() if k != "window") + (
        ("window", DF_CFG["net_kw"]["window"]),)
    return run, run.replace(schedule=sched, net_kw=kw)


def _df_batches() -> list[dict]:
    return _batches(DF["batches"]["seed"], DF_CFG)


@pytest.fixture(scope="module")
def df_trained():
    planned, run = _df_plan_run()
    model, init, terms = _build(run, DF["init"]["torch_seed"])
    log, lrs, tr = _fit(run, model, terms, _df_batches())
    return planned, run, init, model, log, lrs, tr


def test_dehazeformer_check_drives_the_plans_recipe(df_trained):
    """What the check keeps from the plan is the release's recipe (configs/indoor/dehazeformer-t.json, train.py)."""
    planned, run, _, model, _, _, tr = df_trained
    s = planned.schedule
    assert (s.optimizer, s.lr, s.betas, s.weight_decay, s.decay, s.eta_min, s.rec, s.tick_offset) == (
        "adamw", DF_CFG["lr"], (0.9, 0.999), 0.01, "cosine", DF_CFG["lr"] * 1e-2, "l1_pm1", 0)
    assert s.t_max == 300 and s.steps == (s.t_max + 1) * s.tick and s.batch == 32   # range(epochs + 1) epochs
    rel = DF["recorded"]["optimizer_defaults"]
    assert type(tr.opt) is torch.optim.AdamW
    assert tr.opt.defaults["eps"] == rel["eps"] and tr.opt.defaults["amsgrad"] is rel["amsgrad"] is False
    assert tr.opt.defaults["weight_decay"] == rel["weight_decay"] and list(tr.opt.defaults["betas"]) == rel["betas"]
    assert planned.precision == "fp16" and run_precision(planned.precision, "cpu") == "fp32" and not tr.scaler.is_enabled()
    assert model.signed_io and sum(len(getattr(model, f"layer{i}").blocks) for i in range(1, 6)) == sum(
        DF_CFG["net_kw"]["depths"])
    assert set(model.state_dict()) == set(DF["recorded"]["checksums"])   # the release's parameter names


def test_dehazeformer_learning_rates_match_the_release(df_trained):
    lrs = df_trained[5]
    np.testing.assert_allclose(lrs, DF["recorded"]["lrs"], rtol=1e-6, atol=1e-12)
    assert len(set(np.round(lrs, 12))) == 3   # the per-epoch rate changed twice within the check


def test_dehazeformer_losses_match_the_release(df_trained):
    log = df_trained[4]
    loss = log["loss"].to_numpy()
    np.testing.assert_allclose(loss, DF["recorded"]["losses"], rtol=1e-5)
    # the release's own per-epoch log (train() returns AverageMeter.avg, written as 'train_loss')
    per_epoch = loss.reshape(-1, DF_CFG["steps_per_epoch"]).mean(axis=1)
    np.testing.assert_allclose(per_epoch, DF["recorded"]["epoch_train_loss"], rtol=1e-5)


def test_dehazeformer_final_weights_match_the_release(df_trained):
    """Every weight matches, except where the exact gradient is 0 (see :data:`NOISE_DRIVEN`): QK's bias is compared on
    its Q half only and the relative-position MLP's last bias not at all."""
    _, _, init, model, _, _, _ = df_trained
    ref_all = DF["recorded"]["checksums"]
    assert set(model.state_dict()) == set(ref_all)
    final, start, ref = {}, {}, {}
    for k, v in model.state_dict().items():
        if k.endswith(NOISE_DRIVEN[1]):
            continue
        if k.endswith(NOISE_DRIVEN[0]):
            final[k], start[k], ref[k] = v[:v.numel() // 2], init[k][:v.numel() // 2], ref_all[k]["q_half"]
        else:
            final[k], start[k], ref[k] = v, init[k], ref_all[k]
    assert sum(k.endswith(NOISE_DRIVEN[0]) for k in final) == 3   # the tiny net's three attention blocks
    bad = _checksum_mismatches(final, start, ref)
    assert not bad, "\n".join(bad[:20])


# Biases whose exact gradient is 0: QK's K half adds q . b_k to every logit of a softmax row, the relative-position
# MLP's last bias adds one constant per head; Adam (eps 1e-8) turns their rounding-noise gradients into ~lr updates.
NOISE_DRIVEN = ("attn.QK.bias", "attn.attn.meta.2.bias")


def test_dehazeformer_excluded_biases_get_no_gradient():
    """Why the weight check leaves out K's bias and the meta bias: in float64, on the check's first batch, their
    gradients are rounding noise next to the Q bias's."""
    _, run = _df_plan_run()
    torch.manual_seed(DF["init"]["torch_seed"])
    model = build_model(run, fb=None).double()
    batch = {k: v.double() for k, v in _df_batches()[0].items()}
    (fn,) = [fn for _, fn in build_terms(run, model, fb=None, load_run=None).values()]
    fn(model(batch["lq"]), batch, model).backward()
    seen = 0
    for k, p in model.named_parameters():
        if k.endswith(NOISE_DRIVEN[0]):
            q, kb = p.grad.view(2, -1)
            qk_scale = float(q.abs().max())
            assert qk_scale > 1e-5 and float(kb.abs().max()) < 1e-12 * qk_scale, k
            seen += 1
        elif k.endswith(NOISE_DRIVEN[1]):
            assert float(p.grad.abs().max()) < 1e-12 * float(model.get_parameter(k[:-4] + "weight").grad.abs().max()), k
            seen += 1
    assert seen == 6


# ---------------------------------------------------------------------------------------------- NAFNet (GoPro)
NAF = json.loads((Path(__file__).parent / "fixtures" / "equivalence" / "nafnet_steps.json").read_text())
NAF_CFG = NAF["config"]
NAF_OPT = NAF["driven"]["release_options"]


def _naf_plan_run():
    """The full SPN plan's NAFNet (GoPro) baseline run (PSNR loss only), and the same run with only its sizes changed:
    steps (the cosine's length follows: T_max = total_iter in the release), batch, patch and a tiny network."""
    runs = [r for r in plan.build("spn", "full").runs()
            if r.net == "NAFNet" and [t.name for t in r.terms] == ["psnr"]
            and [s.dataset for s in r.train] == ["gopro:train"]]
    assert len(runs) == 1, "the full SPN plan should have one NAFNet GoPro baseline run"
    run = runs[0]
    sched = dataclasses.replace(run.schedule, steps=NAF_CFG["steps"], batch=NAF_CFG["batch"], patch=NAF_CFG["side"])
    kw = (("width", NAF_CFG["width"]), ("enc", tuple(NAF_CFG["enc"])), ("middle", NAF_CFG["middle"]),
          ("dec", tuple(NAF_CFG["dec"])))
    return run, run.replace(schedule=sched, net_kw=kw)


@pytest.fixture(scope="module")
def naf_trained():
    planned, run = _naf_plan_run()
    assert run_precision(run.precision, "cpu") == "fp32"
    model, init, terms = _build(run, NAF["init"]["torch_seed"])
    log, lrs, tr = _fit(run, model, terms, _batches(NAF["batches"]["seed"], NAF_CFG))
    return planned, run, init, model, log, lrs, tr


def test_nafnet_check_drives_the_plans_recipe(naf_trained):
    """What the check keeps from the plan is the release's recipe (options/train/GoPro/NAFNet-width32.yml and
    basicsr/models/image_restoration_model.py's fixed clipping); the release's optimiser as it recorded it."""
    planned, run, _, _, _, _, tr = naf_trained
    s, o = planned.schedule, NAF_OPT
    assert (s.optimizer, s.lr, list(s.betas), s.weight_decay) == (
        "adamw", o["optim_g"]["lr"], o["optim_g"]["betas"], o["optim_g"]["weight_decay"])
    # TrueCosineAnnealingLR (torch's CosineAnnealingLR) per iteration over the whole run: T_max = total_iter
    assert (s.decay, s.eta_min, s.t_max, s.tick, s.tick_offset, s.warmup) == (
        "cosine", o["scheduler"]["eta_min"], None, 1, 0, 0)
    assert s.steps == o["total_iter"] == o["scheduler"]["T_max"] and o["warmup_iter"] < 0
    assert s.batch == o["num_gpu"] * o["batch_size_per_gpu"] and s.patch == o["gt_size"]
    assert s.grad_clip == o["grad_clip_max_norm"] == NAF["recorded"]["clip_max_norm"] and s.ema is None
    assert [(t.name, t.weight, t.kw) for t in planned.terms] == [("psnr", o["pixel_opt"]["loss_weight"], ())]
    assert planned.precision == "fp32" and planned.net_kw == ()
    assert run.schedule.steps == NAF["driven"]["scratch_options"]["total_iter"] == NAF["recorded"]["scheduler"]["T_max"]
    rel = NAF["recorded"]["optimizer_defaults"]
    assert type(tr.opt) is torch.optim.AdamW and NAF["recorded"]["optimizer"] == "AdamW"
    for k in ("lr", "eps", "weight_decay", "amsgrad", "maximize"):
        assert tr.opt.defaults[k] == rel[k], k
    assert list(tr.opt.defaults["betas"]) == rel["betas"]


def test_nafnet_plan_network_is_the_releases():
    """The plan's network (no net_kw: irlib's defaults) is the yml's network_g at full size."""
    planned, _ = _naf_plan_run()
    model = build_model(planned, fb=None)
    g = NAF_OPT["network_g"]
    assert model.intro.out_channels == g["width"]
    assert [len(e) for e in model.encoders] == g["enc_blk_nums"] and len(model.middle_blks) == g["middle_blk_num"]
    assert [len(d) for d in model.decoders] == g["dec_blk_nums"]


def test_nafnet_tlc_pooling_is_global_at_the_training_patch(naf_trained):
    """Named difference: the release trains NAFNetLocal (TLC), irlib trains NAFNet; at a training patch no larger
    than the release's train_size (256, the plan's patch) every block's TLC window (1.5 x its feature map at 256)
    covers the whole feature map, so AvgPool2d takes its global branch and both networks compute the same thing."""
    from irlib.models.nafnet import NAFNet, NAFNetLocal, tlc_kernels

    planned, _, _, model, _, _, _ = naf_trained
    assert type(model) is NAFNet and not isinstance(model, NAFNetLocal)
    assert all(isinstance(b.sca[0], torch.nn.AdaptiveAvgPool2d) for _, b in model.levels())
    side, train = planned.schedule.patch, NAF_OPT["train_size"][-2:]
    assert side <= min(train)
    for m, patch in ((model, NAF_CFG["side"]), (build_model(planned, fb=None), side)):
        kernels = tlc_kernels(m, tuple(train), NAF_OPT["base_scale"])
        padded = -(-patch // m.padder_size) * m.padder_size
        for (lv, _), k in zip(m.levels(), kernels):
            assert min(k) >= padded // 2 ** lv   # window >= feature map: adaptive_avg_pool2d(x, 1)


def test_nafnet_learning_rates_match_the_release(naf_trained):
    lrs = naf_trained[5]
    np.testing.assert_allclose(lrs, NAF["recorded"]["lrs"], rtol=1e-6, atol=1e-12)
    # the rate changes every step; the last step uses tick T - 1 (above eta_min), as basicsr's loop does
    assert len(set(np.round(lrs, 12))) == NAF_CFG["steps"] and lrs[0] == NAF_CFG["lr"]
    assert lrs[-1] > 10 * NAF["recorded"]["scheduler"]["eta_min"]


def test_nafnet_losses_match_the_release(naf_trained):
    loss = naf_trained[4]["loss"].to_numpy()
    np.testing.assert_allclose(loss, NAF["recorded"]["losses"], rtol=1e-5)


def test_nafnet_gradient_norms_match_the_release(naf_trained):
    """The total gradient norm before clipping, each step; it is above the 0.01 limit on every step, so the clip
    (and Adam's response to the rescaled gradient) is exercised throughout."""
    norms = naf_trained[4]["grad_norm"].to_numpy()
    np.testing.assert_allclose(norms, NAF["recorded"]["grad_norms"], rtol=1e-5)
    assert (norms > 100 * NAF["recorded"]["clip_max_norm"]).all()


def test_nafnet_final_weights_match_the_release(naf_trained):
    _, _, init, model, _, _, _ = naf_trained
    bad = _checksum_mismatches(model.state_dict(), init, NAF["recorded"]["checksums"])
    assert not bad, "\n".join(bad[:20])
