"""SPN (Learning from History): every table and figure the paper's own experiments produce.

Each backbone is retrained with its released schedule (SPN: "strictly adhering to the original training
configurations"), once with its own reconstruction loss and once with L_rec − λ·L_neg (Eq. 4). One trained
network is evaluated on every test set of its table (evaluation is cheap, training is not), and identical
runs are shared between tables: Table 5's FFANet rows are Table 3's, its EDSR rows Table 1's EDSR-light x4,
Table 6's "none"/"default" and Tables 8/9's λ=1e-4 / w=0.1 rows are Table 1's runs.
Metric conventions: SR on the BT.601 Y channel with the scale cropped from every border; deraining on Y (as
IDT and the deraining benchmarks report); dehazing and deblurring on RGB; NAFNet on GoPro through its
test-time local converter (TLC), as its release evaluates full-size frames.
"""
from __future__ import annotations

from ...schedules import ORIGINAL, Schedule
from ...engine.core import Builder, Plan, Profile
from ...engine.spec import EvalSpec, RunSpec, Term

SR_SETS = ("Set14", "B100", "Urban100", "Manga109")
# SPN's Table 2 heads its columns Rain100L/H, its setup text says Rain200L/H, and its IDT numbers equal IDT's
# Rain200L/H results: the rows keep the table's names and are measured on Rain200L/H.
DERAIN = {"Rain100L": ("rain200l:train", "rain200l:test"), "Rain100H": ("rain200h:train", "rain200h:test"),
          "DID": ("did:train", "did:test-all"), "DDN": ("ddn:train", "ddn:test"), "SPA": ("spa:train", "spa:test")}
DEHAZE = {"train=ITS": ("reside_its:train", "ITS", "reside_sots:indoor", "SOTS-indoor"),
          "train=RESIDE-6K": ("reside_6k:train", "RESIDE-6K", "reside_6k:test", "SOTS-mix")}
# Where a run's recipe departs from its release on purpose (tests/test_recipes.py checks each against the release's
# recipe fixture): dimension -> reason.
DECLARED = {
    "IDT SPA": {"steps": "irlib choice: the release's 400 epochs over SPA-Data's 638,464 training patches would be "
                         "63.8M steps; irlib gives SPA the release's DID-Data schedule (1.2M steps, see irlib.schedules "
                         "'IDT SPA')",
                "lr_tick": "irlib choice: epochs of DID-Data's 3,000 steps (the DID schedule SPA borrows), not SPA's "
                           "159,616"},
}
PAPER_STEPS = (100, 500, 1000, 2000)
SMOKE_STEPS = (2, 5, 10, 20)   # the history steps scaled to the smoke profile's 24 training steps
#: ``build(ffanet=…)``: how FFANet and FFANet+SPN are trained. ``"paper"``: FFA-Net's own release recipe, as the
#: paper says ("strictly adhering to the original training configurations of each retrained model", Sec. 4) and
#: with the paper's SPN settings. ``"mclir"``: the SPN release's only option file (Aitical/MCLIR@e42fb40
#: options/FFANet_RESIDE_IN_fromScratch.yml, a BasicSR recipe unlike FFA-Net's): AdamW betas (0.9, 0.9), lr 2e-4
#: on torch's cosine with T_max 100K (it rises again after 100K) to eta_min 1e-8 over 500K iterations, batch 4,
#: 128-px patches with flips and rotations, EMA 0.999 (the EMA weights are evaluated), no gradient clipping (its
#: ``use_grad_norm`` key is never read; the model reads ``use_grad_clip``), RGB PSNR on 8-bit outputs, and SPN as
#: its code has it (:data:`irlib.spn.PUBLIC_CODE`: VGG16 relu1_2/2_2/3_3, λ=1e-3, steps 100/200/500/1000, copies
#: started 0.1·fresh + 0.9·θ). The file names ITS ("RESIDE_IN"); the RESIDE-6K runs take it too.
FFANET_RECIPES = ("paper", "mclir")
MCLIR = "Aitical/MCLIR@e42fb400d7ccca2fb3ee08d23ff6994485c6c29f options/FFANet_RESIDE_IN_fromScratch.yml"
MCLIR_FFANET = Schedule(500_000, 4, 128, 2e-4, optimizer="adamw", betas=(0.9, 0.9), weight_decay=0.0, decay="cosine",
                        t_max=100_000, eta_min=1e-8, ema=0.999, rec="l1",
                        source=f"{MCLIR}: AdamW lr 2e-4 betas (0.9, 0.9) wd 0 (lines 61-64), TrueCosineAnnealingLR "
                               "T_max 100000 eta_min 1e-8 (67-69), total_iter 500000 (71), batch 4 (24), gt_size 128 "
                               "(17), ema_decay 0.999 (55), L1 (76)")
MCLIR_STEPS = (100, 200, 500, 1000)   # neg_iter, line 57


def schedule(key: str) -> Schedule:
    """The backbone's released schedule (``irlib.schedules``), by ``"<network> <context>"`` key."""
    from ... import schedules

    if hasattr(schedules, "original"):
        return schedules.original(key)
    base = key.split(" ")[0]
    if base in ORIGINAL:
        return ORIGINAL[base]
    return Schedule(300_000, 8, 128, 2e-4, source="irlib choice: no released schedule")


def build(P: Profile, seed: int = 0, *, ffanet: str = "paper") -> Plan:
    """SPN's plan; ``ffanet`` (:data:`FFANET_RECIPES`) picks the paper's or the SPN release's FFANet recipe."""
    if ffanet not in FFANET_RECIPES:
        raise ValueError(f"SPN ffanet recipe must be one of {', '.join(FFANET_RECIPES)}; got {ffanet!r}")
    B = Builder("spn", P, seed)
    steps = SMOKE_STEPS if P.scale == "tiny" else PAPER_STEPS

    def spn(lam: float = 1e-4, w: float = 0.1, hist: tuple[int, ...] = steps, **kw) -> Term:
        return Term("spn", -lam, tuple(sorted({"lam": lam, "w": w, "steps": tuple(hist), **kw}.items())))

    def ffa_spn(hist: tuple[int, ...] | None = None) -> Term:
        """SPN for FFANet: the paper's, or under ``ffanet="mclir"`` the release's preset (s=100..1000)."""
        if ffanet == "mclir":
            return spn(lam=1e-3, hist=hist or (SMOKE_STEPS if P.scale == "tiny" else MCLIR_STEPS), preset="public_code")
        return spn(hist=hist or steps)

    def pair(base: RunSpec) -> tuple[tuple[RunSpec, ...], tuple[RunSpec, ...]]:
        a = B.seeds(base)
        term = ffa_spn() if base.net == "FFANet" else spn()
        return a, tuple(r.with_terms(term).replace(label=r.label + "+SPN") for r in a)

    # ---------------------------------------------------------------- Table 1: SR
    sr_runs: dict[tuple[str, int], tuple] = {}
    for net, scales in (("EDSR-light", (2, 4)), ("SwinIR-light", (4,)), ("SwinIR", (4,))):
        for s in scales:
            base = B.run(net, net_kw={"scale": s}, train=[(f"div2k:train-x{s}", f"srx{s}")],
                         schedule=schedule(f"{net} x{s}"), label=f"{net} x{s}", augment="dihedral8",
                         select=edsr_select(B, s) if net == "EDSR-light" else None, declared=DECLARED.get(net))
            a, b = sr_runs[net, s] = pair(base)
            for ds in SR_SETS:
                ev = sr_eval(B, ds, s)
                B.measure("Table 1", net, f"x{s}", ds, a, ev)
                B.measure("Table 1", f"{net}+SPN", f"x{s}", ds, b, ev, baseline=a, baseline_label=net)
            for m in (net, f"{net}+SPN"):
                B.average("Table 1", m, f"x{s}", SR_SETS)

    # ---------------------------------------------------------------- Table 2: IDT deraining, per dataset
    for ds, (train, test) in DERAIN.items():
        base = B.run("IDT", train=[(train, "rain")], schedule=schedule(f"IDT {ds}"), label=f"IDT ({ds})",
                     augment="idt", declared=DECLARED.get(f"IDT {ds}"))
        a, b = pair(base)
        ev = EvalSpec(B.testset(test, "rain"), channel="y", quantize=True, tile=128, overlap=20)
        note = "retrained on this dataset's training split; full-size test by 128-px tiles overlapping by 20 " \
               "(IDT's test_full_size.py)" + (
            f"; measured on {test.split(':')[0].replace('rain', 'Rain')} (SPN's setup text)" if "200" in test else "")
        B.measure("Table 2", "IDT", "", ds, a, ev, notes=note)
        B.measure("Table 2", "IDT+SPN", "", ds, b, ev, baseline=a, baseline_label="IDT", notes=note)
        if ds == "Rain100L":
            idt_rain = (a, b, ev)
    for m in ("IDT", "IDT+SPN"):
        B.average("Table 2", m, "", tuple(DERAIN))

    # ---------------------------------------------------------------- Table 3: dehazing, two settings
    dehaze_runs = {}
    for setting, (train, tname, test, tds) in DEHAZE.items():
        for net in ("FFANet", "DehazeFormer-T", "DehazeFormer-S", "DehazeFormer-B"):
            sched = schedule(f"{net} {tname}")
            sel, aug, ev, note = dehaze_recipe(B, net, tname, test, sched)
            if net == "FFANet" and ffanet == "mclir":
                sched, sel, aug, ev = MCLIR_FFANET, None, "dihedral8", EvalSpec(B.testset(test, "haze"), quantize=True)
                note = (f"trained with the SPN release's FFANet options ({MCLIR}), EMA weights, 8-bit RGB; the "
                        "paper's own setting is FFA-Net's release recipe (ffanet='paper')")
            base = B.run(net, train=[(train, "haze")], schedule=sched, label=f"{net} ({tname})", augment=aug,
                         select=sel, precision="fp32" if net == "FFANet" else "fp16")   # DehazeFormer: train.py autocast
            a, b = dehaze_runs[net, setting] = pair(base)
            B.measure("Table 3", net, setting, tds, a, ev, notes=note)
            B.measure("Table 3", f"{net}+SPN", setting, tds, b, ev, baseline=a, baseline_label=net, notes=note)
    ffa, ffa_spn_runs = dehaze_runs["FFANet", "train=ITS"]
    sots = EvalSpec(B.testset("reside_sots:indoor", "haze"),   # FFA-Net's convention (full-size SSIM)
                    quantize=ffanet == "mclir")                   # BasicSR's tensor2img under the release's options

    # ---------------------------------------------------------------- Table 4: deblurring
    base = B.run("NAFNet", train=[("gopro:train", "blur")], schedule=schedule("NAFNet GoPro"), label="NAFNet (GoPro)",
                 augment="dihedral8")
    a, b = pair(base)
    gopro = EvalSpec(B.testset("gopro:test", "blur"), forward="tlc", quantize=True)   # BasicSR: tensor2img, uint8
    B.measure("Table 4", "NAFNet", "", "GoPro", a, gopro, notes="evaluated with NAFNet's test-time local converter (TLC)")
    B.measure("Table 4", "NAFNet+SPN", "", "GoPro", b, gopro, baseline=a, baseline_label="NAFNet",
              notes="evaluated with NAFNet's test-time local converter (TLC)")

    # ---------------------------------------------------------------- Table 5: sample-contrastive methods
    cr = tuple(r.with_terms(Term("cr", 0.1)).replace(label=r.label + "+CR") for r in ffa)
    B.measure("Table 5", "FFANet", "task=dehazing", "SOTS-indoor", ffa, sots, notes="the Table 3 FFANet run (ITS)")
    B.measure("Table 5", "FFANet+CR", "task=dehazing", "SOTS-indoor", cr, sots, baseline=ffa, baseline_label="FFANet",
              notes="AECR-Net's contrastive regularisation (VGG19, weights 1/32..1, weight 0.1)")
    B.measure("Table 5", "FFANet+SPN", "task=dehazing", "SOTS-indoor", ffa_spn_runs, sots, baseline=ffa, baseline_label="FFANet",
              notes="the Table 3 FFANet+SPN run (ITS)")
    B.exclude("Table 5", "FFANet+CCR", "task=dehazing", "SOTS-indoor", "PSNR",
              "CCR (C2PNet's curricular contrastive regularisation) is cited from its paper: its consensus negatives "
              "come from several other pretrained dehazers, which SPN does not retrain")
    B.exclude("Table 5", "FFANet+CCR", "task=dehazing", "SOTS-indoor", "SSIM", "see the PSNR row")
    edsr, edsr_spn = sr_runs["EDSR-light", 4]
    pcl = tuple(r.with_terms(Term("pcl", 5 / 255, (("scale", 4),))).replace(label=r.label + "+PCL") for r in edsr)
    urban = sr_eval(B, "Urban100", 4)
    note = "EDSR-light x4 (the paper's EDSR rows equal Table 1's EDSR-light x4 Urban100)"
    B.measure("Table 5", "EDSR", "task=SISR", "Urban100", edsr, urban, notes=note)
    B.measure("Table 5", "EDSR+PCL", "task=SISR", "Urban100", pcl, urban, baseline=edsr, baseline_label="EDSR",
              notes=note + "; PCL-SR's released recipe 1*L1 + 5*CL on the 0-255 scale = 5/255 on [0, 1]")
    B.measure("Table 5", "EDSR+SPN", "task=SISR", "Urban100", edsr_spn, urban, baseline=edsr, baseline_label="EDSR", notes=note)

    # ---------------------------------------------------------------- Table 6: which negative model
    light, light_spn = sr_runs["SwinIR-light", 4]
    avg_note = "average over Set14, B100, Urban100 and Manga109 (x4), as Table 1's Avg"
    B.average("Table 6", "SwinIR-light", "negative model=none", SR_SETS, ("PSNR",), part_settings=["x4"] * 4,
              part_table="Table 1", notes=avg_note)
    B.average("Table 6", "SwinIR-light+SPN", "negative model=default (EMA latency model)", SR_SETS, ("PSNR",),
              part_settings=["x4"] * 4, part_table="Table 1", notes=avg_note)
    for setting, kw in (("negative model=random (fixed)", {"negative": "random", "negative_seed": 99}),
                        ("negative model=pre-trained (fixed)", {"negative": "pretrained"})):
        runs = []
        for r in light:
            extra = dict(kw)
            if kw["negative"] == "pretrained":
                extra["negative_run"] = r   # the trained baseline, frozen
            runs.append(r.with_terms(spn(**extra)).replace(label=f"{r.label}+SPN ({kw['negative']} negative)"))
        B.average_of("Table 6", "SwinIR-light+SPN", setting, [_m(tuple(runs), sr_eval(B, ds, 4)) for ds in SR_SETS],
                     "PSNR", notes=avg_note)

    # ---------------------------------------------------------------- Tables 7-9: ablations
    for paper_s, s_ in list(zip(PAPER_STEPS, steps)) + [("all", None)]:
        if s_ is None:
            runs = ffa_spn_runs
        else:
            runs = tuple(r.with_terms(ffa_spn(hist=(s_,))).replace(label=f"{r.label}+SPN (s={paper_s})") for r in ffa)
        B.measure("Table 7", "FFANet+SPN", f"step={paper_s}", "SOTS-indoor", runs, sots, ("PSNR",),
                  notes=("all four steps = the Table 3 FFANet+SPN run" if s_ is None else "")
                  + (f"; smoke: step scaled to {s_}" if P.scale == "tiny" and s_ else ""))
    set14 = sr_eval(B, "Set14", 4)
    B.measure("Table 8", "EDSR-light", "lambda=0", "Set14", edsr, set14, ("PSNR",), notes="the Table 1 EDSR-light x4 run")
    for lam in ("1e-2", "1e-3", "5e-4", "1e-4", "1e-5"):
        runs = edsr_spn if lam == "1e-4" else tuple(
            r.with_terms(spn(lam=float(lam))).replace(label=f"{r.label}+SPN (lambda={lam})") for r in edsr)
        B.measure("Table 8", "EDSR-light+SPN", f"lambda={lam}", "Set14", runs, set14, ("PSNR",),
                  baseline=edsr, baseline_label="EDSR-light")
    for w in ("0", "0.01", "0.1", "0.5", "0.9", "0.999"):
        runs = edsr_spn if w == "0.1" else tuple(
            r.with_terms(spn(w=float(w))).replace(label=f"{r.label}+SPN (w={w})") for r in edsr)
        B.measure("Table 9", "EDSR-light+SPN", f"w={w}", "Set14", runs, set14, ("PSNR",),
                  baseline=edsr, baseline_label="EDSR-light")

    # ---------------------------------------------------------------- rows copied from other papers
    why = "published numbers of other methods, copied by SPN for comparison (it retrains only the backbones)"
    B.cite("Table 2", ("MPRNet", "DualGCN", "SPDNet", "Uformer-S", "Restormer", "DRSformer"), why)
    B.cite("Table 3", ("AECR-Net", "SFNet", "C2PNet"), why)
    B.cite("Table 4", ("MIMO-UNet", "HINet", "MAXIM", "Restormer", "UFormer"), why)

    # ---------------------------------------------------------------- figures
    B.figure("Fig. 2", "Retrained with SPN vs the original training", "irlib.engine.drawing:gains_bar",
             tables=("Table 1", "Table 2", "Table 3", "Table 4"), metric="PSNR")
    (edsr4, edsr4_spn), (swinl, swinl_spn) = sr_runs["EDSR-light", 4], sr_runs["SwinIR-light", 4]
    B.figure("Fig. 2a", "Super-resolution x4 on Manga109: PSNR against parameters",
             "irlib.papers.spn.figures:sr_psnr_vs_params", runs=(edsr4[0], edsr4_spn[0], swinl[0], swinl_spn[0]),
             names=("EDSR-light", "EDSR-light+SPN", "SwinIR-light", "SwinIR-light+SPN"), table="Table 1")
    swin, swin_spn = sr_runs["SwinIR", 4]
    B.figure("Fig. 4", "Super-resolution x4: SwinIR vs SwinIR+SPN", "irlib.engine.drawing:visual_pair",
             runs=(swin[0], swin_spn[0]), testset=urban.testset, names=("SwinIR", "SwinIR+SPN"), channel="y", crop=4)
    a, b, ev = idt_rain
    B.figure("Fig. 5", "Deraining: IDT vs IDT+SPN", "irlib.engine.drawing:visual_pair", runs=(a[0], b[0]),
             testset=ev.testset, names=("IDT", "IDT+SPN"), channel="y")
    B.figure("Fig. 6", "Dehazing: FFANet vs FFANet+SPN", "irlib.engine.drawing:visual_pair", runs=(ffa[0], ffa_spn_runs[0]),
             testset=sots.testset, names=("FFANet", "FFANet+SPN"))
    return B.plan


def edsr_select(B: Builder, s: int) -> dict:
    """EDSR-PyTorch's checkpoint selection (src/option.py ``--data_range 1-800/801-810``, ``--test_every 1000``;
    src/trainer.py keeps ``model_best.pt``, the epoch of the best validation PSNR): every 1,000 steps on DIV2K's
    validation images 0801-0810, PSNR as its ``utility.calc_psnr`` measures a non-benchmark set (RGB, ``scale + 6``
    pixels shaved from every border, on the 8-bit-quantised output)."""
    ts = B.testset(f"div2k:valid-x{s}", f"srx{s}")
    return {"best_every": 1000, "on": ts, "eval": EvalSpec(ts, channel="rgb", crop=s + 6, quantize=True)}


def sr_eval(B: Builder, ds: str, s: int) -> EvalSpec:
    """SR test pairs: the official bicubic LR of the EDSR benchmark archive; Manga109 (HR only) is
    down-scaled by irlib's antialiased bicubic (close to MATLAB imresize, not bit-identical). Outputs are
    quantised to 8 bits before measuring, as EDSR-PyTorch (``utility.quantize``) and KAIR (``tensor2uint``) do."""
    if ds == "Manga109":
        ts = B.testset("manga109:HR", f"srx{s}")
    else:
        ts = B.testset(f"sr_benchmark:{ds}-x{s}", f"srx{s}")
    return EvalSpec(ts, channel="y", crop=s, quantize=True)


def dehaze_recipe(B: Builder, net: str, tname: str, test: str, sched: Schedule):
    """Release conventions of a dehazing run: ``(select, augment, evaluation, note)``.

    FFA-Net (net/main.py, data_utils.py): random horizontal flip and 0-3 quarter turns; the test split is evaluated
    every ``--eval_step`` 5,000 steps and a checkpoint kept only when its PSNR and SSIM both beat the kept one's
    (line 96; selection rule ``psnr_and_ssim``). DehazeFormer (train.py, datasets/loader.py,
    configs/*): flip and quarter turns on ITS, ``only_h_flip`` on RESIDE-6K; the test split is evaluated every
    ``eval_freq`` epochs (1 on ITS, 10 on RESIDE-6K; one epoch = the schedule's ``tick``) and the best kept; its
    test.py measures SSIM on images average-pooled ~2x."""
    ts = B.testset(test, "haze")
    if net == "FFANet":
        every, aug, ev = 5000, "dihedral8", EvalSpec(ts)
    else:
        every = sched.tick * (1 if tname == "ITS" else 10)
        aug = "dihedral8" if tname == "ITS" else "hflip"
        ev = EvalSpec(ts, ssim="dehazeformer")
    what = "PSNR and SSIM (saved only when both beat the kept checkpoint's, FFA-Net's net/main.py)" \
        if net == "FFANet" else "PSNR"
    note = (f"checkpoint: the best test-split {what} of evaluations every {every:,} steps (the release's selection on "
            f"the test split)" + ("; SSIM on ~2x average-pooled images (DehazeFormer's test.py)" if ev.ssim else ""))
    sel = {"best_every": every, "on": ts, **({"rule": "psnr_and_ssim"} if net == "FFANet" else {})}
    return sel, aug, ev, note


def _m(runs, ev):
    from ...engine.spec import Measure

    return Measure(runs, ev)
