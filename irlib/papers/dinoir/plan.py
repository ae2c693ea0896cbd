"""DINO-IR (Multi-task Image Restoration Guided by Robust DINO Features): every number of the paper's own
experiments, and its DINOv2 analyses.

Runs (15 in every profile): the multi-task Restormer baseline, +PSF, +DPC and DINO-IR (PSF + DPC) — Table 3's
ablation, whose Baseline and DINO-IR rows are also Table 1's Restormer and DINO-IR rows (the reference notes
the Baseline row is identical to Table 1's Restormer row: one run behind both) and Table 6's 4-task rows; the
DINO-IR run also gives Table 4 (unseen Rain100L, unseen σ=100). Table 6 adds B, B+N, B+N+R pairs (Restormer,
DINO-IR); Table 2 one single-task denoiser; Table 5 V0 (plain Restormer) and V1-V3 (one DINOv2 block each).

Data (the paper's Settings): multi-task training mixes, round-robin with one source per task ("a balanced
number of datasets for different tasks"), DID rain pairs (``did:train``), Gaussian noise σ∈{15, 25, 50} and
Gaussian blur (k=15, σ∈[2.0, 3.1]) on DID's clean training images, and OTS for haze. Tests: DID heavy / medium
rain, BSD68 (the colour CBSD68 images: the networks are RGB) at σ=15/25/50, Gaussian-blurred DID (the medium test
split's clean images) and SOTS — the outdoor part, as the training set is OTS (outdoor); the paper says only
"SOTS". Noise "ranging from 15 to 50": irlib trains on the three tested levels, as PromptIR/AirNet do.
Single-task denoising (Table 2): one model for σ∈{15, 25, 50} on BSD400 + WED pooled ("a separate model is
trained for different restoration tasks": one per task, denoising being one; ``per_sigma=True`` trains one per
σ). Table 5 ("on the deraining task ... reported on Rain100L"): single-task deraining on Rain100L's training
pairs; V1-V3 are DINO-IR with PSF on one block (shallow 2 / medium 6 / deep 11) and no DPC, so that V0→V1..V3
isolates the guidance.

Metric: PSNR/SSIM on RGB for every task. The paper does not say; its Table 5 V0 — a Restormer trained for
deraining — scores 36.74 dB on Rain100L, where Restormer's own Y-channel result is 38.99 (TextPromptIR's Table 2
prints it), a gap typical of RGB vs Y; PromptIR, whose single-task numbers Table 2 copies, evaluates on RGB.
``rain_channel="y"`` switches the deraining columns to Y (Restormer's release convention).

Other methods (class ``comparison``: the authors trained them in this setting): DnCNN, MPRNet, NAFNet and
PromptIR are trained on the same four-task mix with their releases' recipes (``irlib.schedules``, "<net> DINO-IR
mix") and evaluated like DINO-IR (Tables 1 and 4); so is AirNet, with its release's two stages (encoder alone on
two crops of each degraded image, then L1 + 0.1 x contrastive: :func:`airnet_terms`, ``forward="airnet"``). WGWS
and DA-CLIP are planned but not yet trainable (:data:`NOT_TRAINABLE` says why). Table 2's other rows are copied
from other work (cited).
Known gaps: OTS training uses the whole split (the paper's 4,000-image subset is not published).
"""
from __future__ import annotations

from ...dinoir import DEFAULT_LAYERS, DPC_LAYERS, DPC_LAYERS_PSF
from ...schedules import AIRNET_ENCODER_EPOCHS, AIRNET_EPOCHS, AIRNET_TYPES, original
from ...engine.core import Builder, Plan, Profile
from ...engine.spec import EvalSpec, RunSpec, Term

NOISE = "noise15|noise25|noise50"      # one clean-image source, each sample one of the three levels
# Table 1 columns: (setting, dataset name, data reference, task label); B, N, R, H order of the sources below
COLUMNS = (
    ("multi-task; deraining; rain=High", "DID", "did:test-heavy", "rain"),
    ("multi-task; deraining; rain=Medium", "DID", "did:test-medium", "rain"),
    ("multi-task; denoising; sigma=15", "BSD68", "cbsd68:test", "noise15"),
    ("multi-task; denoising; sigma=25", "BSD68", "cbsd68:test", "noise25"),
    ("multi-task; denoising; sigma=50", "BSD68", "cbsd68:test", "noise50"),
    ("multi-task; deblurring", "DID", "did:test-medium-clean", "blur"),
    ("multi-task; dehazing", "SOTS", "reside_sots:outdoor", "haze"),
)
SOURCES = {"B": ("did:train-clean", "blur"), "N": ("did:train-clean", NOISE), "R": ("did:train", "rain"),
           "H": ("reside_ots:train", "haze", 4000)}   # "we select 4,000 images from the OTS dataset" (not published which)
TASK_SETS = ("B", "BN", "BNR", "BNRH")
TABLE4_COLUMNS = (("multi-task (4 degradations); unseen dataset", "Rain100"),
                  ("multi-task (4 degradations); unseen noise level; sigma=100", "BSD68"))
# Table 1's other methods that irlib trains in DINO-IR's setting: (zoo network, row label, net_kw, extra terms,
# training augmentation of the release, noise storage of the release). Augmentation: KAIR's augment_img over
# randint(0, 7); MPRNet's nine-case randint(0, 8) ("mprnet"); NAFNet's SIDD option use_flip and use_rot false;
# PromptIR's random_augmentation over randint(1, 7). Noise: KAIR's dataset_dncnn adds float noise unclipped;
# PromptIR's Degradation clips to [0, 255] and casts to uint8; MPRNet and NAFNet read stored pairs (irlib's float).
COMPARISONS = (
    ("DnCNN", "DnCNN", {}, (), "dihedral8", ""),
    ("MPRNet", "MPRNet", {}, (Term("edge", 0.05),), "mprnet", ""),
    ("NAFNet", "NAFNet", {"width": 32, "enc": (2, 2, 4, 8), "middle": 12, "dec": (2, 2, 2, 2)}, (), "none", ""),
    ("AirNet", "AirNet", {"batch_size": AIRNET_TYPES}, None, "dihedral7", "uint8"),   # queue: batch x 256
    ("PromptIR", "PromptIR", {}, (), "dihedral7", "uint8"),
)
# Where a comparison run departs from its release's recipe on purpose: {network: {recipe dimension: why}}
DECLARED = {
    "AirNet": {
        "total_batch": "the release's batch is len(de_type), one image per degradation type it trains on (5: three "
                       "noise levels, rain, haze); the same rule on DINO-IR's tasks as AirNet names them (three "
                       "noise levels, rain, haze, blur) gives 6, which also sizes the MoCo queue (6 x 256); irlib "
                       "feeds one source per batch in turn where the release mixes one of each type per batch",
    },
    "MPRNet": {
        "lr_schedule": "irlib's warmup_cosine warms up from 0 (0, lr/2, lr over epochs 1-3); the release's "
                       "GradualWarmupScheduler (multiplier 1), stepped once before training, gives lr/3, 2lr/3, lr; "
                       "both then anneal from lr in epoch 4 by a cosine of 247 epochs toward 1e-6",
        "select": "irlib keeps the final weights: the release keeps model_best.pth by PSNR on its validation "
                  "folder (Rain100L) every 5 epochs, which is not part of DINO-IR's four-task setting, and the "
                  "DINO-IR paper does not say which checkpoint its comparison rows use",
    },
}
# Table 4 labels of the comparison runs it also measures (unseen Rain100L, unseen sigma=100)
TABLE4_LABELS = {"AirNet": "AIRNet", "PromptIR": "PromptIR"}


def airnet_terms(steps: int) -> tuple[Term, ...]:
    """AirNet's release losses over a run of ``steps`` steps: the first ``AIRNET_ENCODER_EPOCHS / AIRNET_EPOCHS``
    of it train the encoder alone (contrastive cross-entropy, weight 1), then L1 + 0.1 x contrastive
    (XLearning-SCU/2022-CVPR-AirNet@bedea82 train.py:40-48)."""
    n = steps * AIRNET_ENCODER_EPOCHS // AIRNET_EPOCHS
    return (Term("l1", 1.0, (("from", n),)), Term("airnet_contrast", 1.0, (("then", 0.1), ("until", n))))
# Table 1's other methods whose release training irlib's trainer cannot express yet (rows stay the authors'
# measurements, class "comparison", but are not reproduced): why, per method
NOT_TRAINABLE = {
    "WGWS": "WGWS-Net trains a shared stage-1 network, then weather-specific parameters per degradation type, "
            "selected by a per-task flag at train and test time; irlib's trainer has no per-task parameter stage, "
            "and stage 1's depth loss (zhuyr97/WGWS-Net@66f0813 README.md:31-34 --depth_loss True, "
            "loss/losses.py:241-265) needs ADDS-DepthNet's pretrained ResNet-18 depth encoder/decoder, which irlib's "
            "weight manifest does not hold",
    "DA-CLIP": "DA-CLIP trains its CLIP controller on degradation captions, then an IR-SDE restorer (700K steps, "
               "T=100 stochastic sampling); irlib has neither the caption/controller stage nor SDE training",
}
# The paper's own runs (Restormer and DINO-IR, every table): what the paper leaves open, irlib chooses
DECLARED_OWN = {
    "lr_schedule": "irlib choice: the paper says only that the rate starts at 2e-4 and is reduced to 1e-4; irlib "
                   "holds 2e-4 for 92K steps, then follows a cosine to 1e-4 (swz30/Restormer's released "
                   "CosineAnnealingRestartCyclicLR periods [92000, 208000] with DINO-IR's two rates; see "
                   "irlib.schedules 'DINO-IR multi-task')",
}
NOTES = {"DID": "DID-MDN test set", "BSD68": "CBSD68 (colour BSD68)", "SOTS": "SOTS-outdoor (training set OTS)"}


def build(P: Profile, seed: int = 0, *, per_sigma: bool = False, dpc: str = "shallow", rain_channel: str = "rgb",
          derainer: str = "multi-task") -> Plan:
    """DINO-IR's plan. Options (defaults follow the paper; see the module docstring): ``per_sigma`` one
    single-task denoiser per σ; ``dpc`` ``shallow`` (:data:`irlib.dinoir.DPC_LAYERS`) or ``psf`` (blocks 2, 6,
    11); ``rain_channel`` ``rgb`` or ``y``; ``derainer`` for Fig. 5's "little rain" image: ``multi-task`` (the
    Table 1 Restormer, trained on DID rain like the test image) or ``v0`` (Table 5's Rain100L Restormer)."""
    if dpc not in ("shallow", "psf") or rain_channel not in ("rgb", "y") or derainer not in ("multi-task", "v0"):
        raise ValueError(f"dpc must be shallow|psf, rain_channel rgb|y, derainer multi-task|v0; got {dpc!r}, "
                         f"{rain_channel!r}, {derainer!r}")
    B = Builder("dinoir", P, seed)
    limit = P.limits.images if P.limits else None
    mt, st = original("DINO-IR multi-task"), original("DINO-IR single-task")
    dpc_term = Term("dpc", 1.0, (("layers", DPC_LAYERS if dpc == "shallow" else DPC_LAYERS_PSF),))

    def own(net: str, **kw) -> RunSpec:
        """One of the paper's own runs, with irlib's choices where the paper is silent declared."""
        return B.run(net, declared=DECLARED_OWN, **kw)

    def pair(tasks: str) -> tuple[tuple[RunSpec, ...], tuple[RunSpec, ...]]:
        """(Restormer baseline, DINO-IR) trained on the sources of ``tasks`` (round-robin, B/N/R/H order)."""
        train = [SOURCES[t] for t in tasks]
        tag = "+".join(tasks)
        base = own("Restormer", train=train, schedule=mt, label=f"Restormer ({tag})")
        full = own("DINO-IR", train=train, schedule=mt, terms=[dpc_term], net_kw={"layers": DEFAULT_LAYERS},
                     label=f"DINO-IR ({tag})")
        return B.seeds(base), B.seeds(full)

    def ev(ref: str, task: str) -> EvalSpec:
        return EvalSpec(B.testset(ref, task), channel=rain_channel if task == "rain" else "rgb")

    # ---------------------------------------------------------------- Tables 1 and 3: multi-task, ablation
    base, full = pair("BNRH")
    train4 = [SOURCES[t] for t in "BNRH"]
    psf = B.seeds(own("DINO-IR", train=train4, schedule=mt, net_kw={"layers": DEFAULT_LAYERS},
                        label="Restormer+PSF (B+N+R+H)"))
    dpc_only = B.seeds(own("Restormer", train=train4, schedule=mt, terms=[dpc_term], label="Restormer+DPC (B+N+R+H)"))
    t3 = {"Baseline (Restormer)": (base, ""), "with PSF (Restormer)": (psf, "PSF and D-R fusion, L1 only"),
          "with DPC (Restormer)": (dpc_only, "plain Restormer, L1 + DPC"), "DINO-IR": (full, "PSF + D-R fusion + DPC")}
    for setting, ds, ref, task in COLUMNS:
        e = ev(ref, task)
        note = f"{NOTES[ds]}; measured {ref} ({task}, {e.channel.upper()})"
        B.measure("Table 1", "Restormer", setting, ds, base, e,
                  notes=note + "; the paper's own Restormer run: the same run as Table 3's Baseline")
        B.measure("Table 1", "DINO-IR", setting, ds, full, e, baseline=base, baseline_label="Restormer", notes=note)
        for m, (runs, what) in t3.items():
            is_base = m.startswith("Baseline")
            B.measure("Table 3", m, setting, ds, runs, e, baseline=() if is_base else base,
                      baseline_label="" if is_base else "Baseline (Restormer)",
                      notes=note + (f"; {what}" if what else "; the Table 1 Restormer run"))
    settings, names = [c[0] for c in COLUMNS], [c[1] for c in COLUMNS]
    for m in ("Restormer", "DINO-IR"):
        B.average("Table 1", m, "multi-task", names, part_settings=settings,
                  notes="mean of the 7 task columns (the reference's Avg convention)")

    # ---------------------------------------------------------------- Table 2: single-task denoising
    pooled = [("bsd400:train", NOISE), ("wed:train", NOISE)]
    sigmas = (15, 25, 50)
    if per_sigma:
        single = {s: B.seeds(own("DINO-IR", train=[(d, f"noise{s}") for d, _ in pooled], schedule=st,
                                   terms=[dpc_term], net_kw={"layers": DEFAULT_LAYERS}, label=f"DINO-IR denoise s={s}"))
                  for s in sigmas}
    else:
        one = B.seeds(own("DINO-IR", train=pooled, schedule=st, terms=[dpc_term], net_kw={"layers": DEFAULT_LAYERS},
                            label="DINO-IR denoise (s=15/25/50)"))
        single = dict.fromkeys(sigmas, one)
    for ds, ref in (("BSD68", "cbsd68:test"), ("Urban100", "sr_benchmark:Urban100")):
        for s in sigmas:
            B.measure("Table 2", "DINO-IR", f"single-task; sigma={s}", ds, single[s], ev(ref, f"noise{s}"),
                      notes=f"trained on BSD400+WED (pooled), {'one model per sigma' if per_sigma else 'one model for sigma 15/25/50'}"
                            + ("; CBSD68 images" if ds == "BSD68" else ""))

    # ---------------------------------------------------------------- Table 4: unseen data (the Table 1 model)
    B.measure("Table 4", "DINO-IR", "multi-task (4 degradations); unseen dataset", "Rain100", full,
              ev("rain100l:test", "rain"), notes="the Table 1 DINO-IR run; Rain100L test pairs (the text says Rain100L)")
    B.measure("Table 4", "DINO-IR", "multi-task (4 degradations); unseen noise level; sigma=100", "BSD68", full,
              ev("cbsd68:test", "noise100"), notes="the Table 1 DINO-IR run; CBSD68 with sigma=100 noise")

    # ---------------------------------------------------------------- Table 5: which DINOv2 block
    rain100 = [("rain100l:train", "rain")]
    v0 = B.seeds(own("Restormer", train=rain100, schedule=st, label="V0 Restormer (Rain100L)"))
    r100 = ev("rain100l:test", "rain")
    B.measure("Table 5", "V0 (Restormer)", "DINOv2 layer=none", "Rain100L", v0, r100, ("PSNR",),
              notes="single-task deraining on Rain100L; no DINOv2")
    for i, (name, layer) in enumerate(zip(("shallow", "medium", "deep"), DEFAULT_LAYERS), 1):
        runs = B.seeds(own("DINO-IR", train=rain100, schedule=st, net_kw={"layers": (layer,)},
                             label=f"V{i} Restormer+{name} DINOv2 (Rain100L)"))
        B.measure("Table 5", f"V{i} (Restormer+{name} DINOv2)", f"DINOv2 layer={name}", "Rain100L", runs, r100,
                  ("PSNR",), baseline=v0, baseline_label="V0 (Restormer)",
                  notes=f"PSF + D-R fusion on DINOv2 block {layer + 1} of 12 only, L1 only")

    # ---------------------------------------------------------------- Table 6: deblurring vs number of tasks
    blur = ev("did:test-medium-clean", "blur")
    for tasks in TASK_SETS:
        a, b = (base, full) if tasks == "BNRH" else pair(tasks)
        setting = f"tasks={len(tasks)} ({'+'.join(tasks)})"
        note = "Gaussian-blurred DID test images" + ("; the Table 1 runs" if tasks == "BNRH" else "")
        B.measure("Table 6", "Baseline (Restormer)", setting, "DID", a, blur, notes=note)
        B.measure("Table 6", "DINO-IR", setting, "DID", b, blur, baseline=a, baseline_label="Baseline (Restormer)",
                  notes=note)

    # ---------------------------------------------------------------- Fig. 1a: single-task vs multi-task
    # One Restormer and one DINO-IR per task, trained on that task's source alone with the single-task values
    # (batch 4, patch 128), evaluated on the task's Table 1 columns; the multi-task bars are Table 1's rows.
    for t, name in (("B", "deblurring"), ("N", "denoising"), ("R", "deraining"), ("H", "dehazing")):
        src = [SOURCES[t]]
        one = {"Restormer": B.seeds(own("Restormer", train=src, schedule=st, label=f"Restormer single-task ({t})")),
               "DINO-IR": B.seeds(own("DINO-IR", train=src, schedule=st, terms=[dpc_term],
                                        net_kw={"layers": DEFAULT_LAYERS}, label=f"DINO-IR single-task ({t})"))}
        for setting, ds, ref, task in COLUMNS:
            if f"; {name}" not in setting:
                continue
            for method, runs in one.items():
                B.measure("Fig. 1a", method, setting.replace("multi-task", "single-task"), ds, runs, ev(ref, task),
                          ("PSNR",), extra=True, notes=f"trained on the {name} source alone (single-task values)")

    # ---------------------------------------------------------------- DINOv2 analyses (studies)
    mod = "irlib.papers.dinoir.studies"
    fig3b = B.study("Fig. 3b", f"{mod}:fig3b_study", dataset=B.data("cbsd68:test"), limit=limit)
    for m in ("f_DINO (DINOv2 features)", "f_IMAGE (patch-embedding features)", "degraded image"):
        B.study_row(fig3b, "Fig. 3b", m, "varying noise levels", "", "variance",
                    notes="frozen DINOv2 ViT-S/14 (no training involved)")
    gating = B.study("Text", f"{mod}:gating_study", deps=full,
                     testsets=tuple((B.data(ref), task) for _, _, ref, task in COLUMNS), limit=limit)
    for name in ("shallow", "medium", "deep"):
        B.study_row(gating, "Text", "DINO-IR (PSF gating network)", f"DINOv2 features={name}", "", "score",
                    notes="the Table 1 DINO-IR run's PSF gate")
    fig3a = B.study("Fig. 3a", f"{mod}:fig3a_study", dataset=B.data("did:test-heavy"))
    for version in ("rainy", "noisy", "blurry"):   # numbers the paper shows only as a picture: extra rows
        B.study_row(fig3a, "Fig. 3a", "DINOv2 block 12 features", version, "", "cosine similarity to clean",
                    extra=True)
    fig5 = B.study("Fig. 5", f"{mod}:fig5_study", deps=base if derainer == "multi-task" else v0,
                   dataset=B.data("did:test-heavy"), limit=limit, layers=DPC_LAYERS, label="DID")
    from .studies import FIG5_CLOSER, FIG5_LIGHT, fig5_features

    for setting in ("heavy rain", FIG5_LIGHT):
        B.study_row(fig5, "Fig. 5", fig5_features(DPC_LAYERS), setting, "DID", "L1 distance to no rain", extra=True)
        B.study_row(fig5, "Fig. 5", "image", setting, "DID", "PSNR", extra=True)
    B.study_row(fig5, "Fig. 5", fig5_features(DPC_LAYERS), FIG5_CLOSER, "DID", "share of images", extra=True)

    # ---------------------------------------------------------------- figures
    figs = "irlib.papers.dinoir.figures"
    B.figure("Fig. 1a", "Single-task vs multi-task: Restormer and DINO-IR on each task", f"{figs}:single_vs_multi",
             tables=("Table 1", "Fig. 1a"))
    B.figure("Fig. 1b", "Deblurring as the number of training tasks grows", f"{figs}:tasks_curve", table="Table 6")
    B.figure("Fig. 3a", "Deep DINOv2 features of one image under three degradations", f"{figs}:fig3a", studies=(fig3a,))
    B.figure("Fig. 3b", "PSNR deviation across noise levels: image, f_IMAGE, f_DINO", f"{figs}:fig3b", studies=(fig3b,))
    B.figure("Fig. 5", "Shallow DINOv2 features: heavy rain, light rain (derained), no rain", f"{figs}:fig5",
             studies=(fig5,))
    sots, heavy = ev("reside_sots:outdoor", "haze"), ev("did:test-heavy", "rain")
    B.figure("Fig. 6", "Dehazing on SOTS (multi-task): Restormer vs DINO-IR", "irlib.engine.drawing:visual_pair",
             runs=(base[0], full[0]), testset=sots.testset, names=("Restormer", "DINO-IR"))
    B.figure("Fig. 7", "Deraining on DID (multi-task): Restormer vs DINO-IR", "irlib.engine.drawing:visual_pair",
             runs=(base[0], full[0]), testset=heavy.testset, names=("Restormer", "DINO-IR"), channel=rain_channel)

    # ---------------------------------------------------------------- other methods the authors ran (Tables 1, 4)
    # "We evaluate methods that provide codes and pre-trained models": DINO-IR trained each in its own four-task
    # setting with the method's released code. Their rows are the paper's measurements (class "comparison"),
    # planned with each release's recipe (irlib.schedules, "<net> DINO-IR mix") on the same mix and conventions.
    with B.comparisons():
        for net, label, kw, extra, augment, synth in COMPARISONS:
            sched = original(f"{net} DINO-IR mix")
            airnet = net == "AirNet"   # two crops per sample, encoder-only first stage (irlib.models.airnet)
            runs = B.seeds(B.run(net, train=train4, schedule=sched,
                                 net_kw=kw if P.scale != "tiny" else {},   # tiny size: the zoo's tiny config
                                 terms=airnet_terms(B.schedule(sched).steps) if airnet else extra, augment=augment,
                                 synth=synth, declared=DECLARED.get(net), forward="airnet" if airnet else "",
                                 label=f"{net} (B+N+R+H, DINO-IR's mix)"))
            for setting, ds, ref, task in COLUMNS:
                e = ev(ref, task)
                B.measure("Table 1", label, setting, ds, runs, e,
                          notes=f"{NOTES[ds]}; {net} trained with its release's recipe on DINO-IR's four-task mix")
            B.average("Table 1", label, "multi-task", names, part_settings=settings,
                      notes="mean of the 7 task columns (the reference's Avg convention)")
            if label in TABLE4_LABELS:
                t4 = TABLE4_LABELS[label]
                B.measure("Table 4", t4, "multi-task (4 degradations); unseen dataset", "Rain100", runs,
                          ev("rain100l:test", "rain"), notes=f"the Table 1 {label} run; Rain100L test pairs")
                B.measure("Table 4", t4, "multi-task (4 degradations); unseen noise level; sigma=100",
                          "BSD68", runs, ev("cbsd68:test", "noise100"), notes=f"the Table 1 {label} run; CBSD68")
        for label, why in NOT_TRAINABLE.items():
            for setting, ds, *_ in COLUMNS:
                for metric in ("PSNR", "SSIM"):
                    B.exclude("Table 1", label, setting, ds, metric, why)
            for metric in ("PSNR", "SSIM"):
                B.exclude("Table 1", label, "multi-task", "Avg", metric, why)

    # ---------------------------------------------------------------- rows copied from other work
    B.cite("Table 2", ("CBM3D", "DnCNN", "IRCNN", "FFDNet", "BRDNet", "Restormer", "TKMANet", "AirNet", "DA-CLIP",
                       "PromptIR"),
           "published numbers of other methods ('Some experimental results are from PromptIR'); DINO-IR is the "
           "paper's own row",
           source={**dict.fromkeys(("CBM3D", "DnCNN", "IRCNN", "FFDNet", "BRDNet", "Restormer", "AirNet", "PromptIR"),
                                   "PromptIR (Potlapalli et al., NeurIPS 2023) for some of them: the text says 'Some "
                                   "experimental results are from PromptIR' without naming which"),
                   "TKMANet": "", "DA-CLIP": ""})
    return B.plan
