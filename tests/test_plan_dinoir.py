"""DINO-IR's plan: the rows it plans against the reference (own rows only), the runs the tables share, what each
run trains and the Avg columns (the whole rehearsal, tests/test_rehearsal.py, runs every table end to end)."""
import pandas as pd
import pytest

from irlib import plan
from irlib.engine.spec import Average, Measure, RowKey, Study
from irlib.results import reference

KEY = ["paper", "table", "method", "setting", "dataset", "metric"]
OWN = {"Table 1": 32, "Table 2": 12, "Table 3": 56, "Table 4": 4, "Table 5": 4, "Table 6": 16, "Fig. 3b": 3, "Text": 3}


@pytest.fixture(scope="module")
def full():
    return plan.build("dinoir", "full")


def _rows(p, table, method=None):
    return {r.key: r for r in p.rows if r.key.table == table and (method is None or r.key.method == method)}


def _runs(p, table, method, setting=None):
    rows = [r for r in _rows(p, table, method).values() if isinstance(r.source, Measure)
            and (setting is None or r.key.setting == setting)]
    keys = {tuple(x.key() for x in r.source.runs) for r in rows}
    assert len(keys) == 1, f"{table} {method}: rows measured from different runs"
    return keys.pop()


def test_planned_rows_are_the_references_own_rows(full):
    ref = reference("dinoir")
    frame = full.frame()
    own_frame = frame[~frame.extra & (frame.kind == "own")]
    counts = own_frame.groupby("table").size().to_dict()
    assert counts == OWN and sum(OWN.values()) == 130
    extra = frame[frame.extra]  # Figs. 3a and 5: numbers the paper shows only as pictures
    assert set(extra.table) == {"Fig. 1a", "Fig. 3a", "Fig. 5"} and len(extra) == 14 + 8   # Fig. 1a's bars: 14
    classes = full.row_classes(ref)
    for table, n in OWN.items():
        own = classes[(classes.table == table) & (classes["class"] == "own")]
        assert len(own) == n, table
        assert set(map(tuple, own[KEY].values)) == {tuple(k.as_dict().values()) for k, r in _rows(full, table).items()
                                                    if r.kind == "own"}
    assert len(ref) == 370 and (classes["class"] == "cited").sum() == 120 and (classes.status != "unaccounted").all()


def test_other_methods_the_authors_ran_are_comparisons_not_citations(full):
    """DINO-IR's 'Evaluated Methods': the seven other methods of Table 1 (and Table 4's AIRNet and PromptIR) were
    trained and evaluated by its authors in its four-task setting: 120 rows of class 'comparison', none cited."""
    classes = full.row_classes(reference("dinoir"))
    comp = classes[classes["class"] == "comparison"]
    assert len(comp) == 120
    assert set(comp[comp.table == "Table 1"].method) == {"DnCNN", "MPRNet", "NAFNet", "AirNet", "WGWS", "DA-CLIP",
                                                          "PromptIR"}
    assert set(comp[comp.table == "Table 4"].method) == {"AIRNet", "PromptIR"}
    assert "Table 1" not in full.cited and "Table 4" not in full.cited
    planned = comp[comp.status == "planned"]
    assert set(planned.method) == {"DnCNN", "MPRNet", "NAFNet", "AirNet", "PromptIR", "AIRNet"}
    assert len(planned) == 5 * 16 + 2 * 2 * 2   # Table 1: 16 per method; Table 4: AIRNet and PromptIR, 2 x 2 each
    excluded = {e.key.method: e.reason for e in full.excluded}
    assert set(excluded) == {"WGWS", "DA-CLIP"} and all(len(r) > 60 for r in excluded.values())
    assert len(full.excluded) == 2 * 16
    # each comparison method trains on DINO-IR's own four-task mix with its release's schedule, once for both tables
    def spec(method):
        return next(r for r in _rows(full, "Table 1", method).values() if isinstance(r.source, Measure)).source.runs[0]

    for m in ("DnCNN", "MPRNet", "NAFNet", "AirNet", "PromptIR"):
        same = [(s.dataset, s.task, s.subset) for s in spec(m).train]
        assert len(_runs(full, "Table 1", m)) == 1 and same == [(s.dataset, s.task, s.subset) for s in spec("DINO-IR").train]
        # noise stored as the release makes it: PromptIR and AirNet clip and cast to uint8, the others keep float
        assert {s.synth for s in spec(m).train} == ({"", "uint8"} if m in ("PromptIR", "AirNet") else {""})
        assert spec(m).schedule.source.startswith(("cszn/KAIR", "swz30/MPRNet", "megvii", "va1shn9v",
                                                   "XLearning-SCU/2022-CVPR-AirNet"))
    assert _runs(full, "Table 4", "PromptIR") == _runs(full, "Table 1", "PromptIR")
    assert _runs(full, "Table 4", "AIRNet") == _runs(full, "Table 1", "AirNet")
    # AirNet: the release's two stages (encoder alone for 100 of 1000 400-step epochs, then L1 + 0.1 x contrastive)
    air = spec("AirNet")
    assert air.forward == "airnet" and dict(air.net_kw) == {"batch_size": 6} and air.augment == "dihedral7"
    assert (air.schedule.steps, air.schedule.batch, air.schedule.patch, air.schedule.tick) == (400_000, 6, 128, 400)
    terms = {t.name: t for t in air.terms}
    assert set(terms) == {"l1", "airnet_contrast"} and terms["l1"].get("from") == 40_000
    assert (terms["airnet_contrast"].weight, terms["airnet_contrast"].get("until"),
            terms["airnet_contrast"].get("then")) == (1.0, 40_000, 0.1)
    cited2 = classes[(classes.table == "Table 2") & (classes["class"] == "cited")]
    assert (cited2[cited2.method == "DA-CLIP"].cited_from == "source not stated").all()
    assert cited2[cited2.method == "CBM3D"].cited_from.str.contains("PromptIR").all()


def test_tables_share_the_paired_runs(full):
    base, dino = _runs(full, "Table 1", "Restormer"), _runs(full, "Table 1", "DINO-IR")
    assert _runs(full, "Table 3", "Baseline (Restormer)") == base and _runs(full, "Table 3", "DINO-IR") == dino
    assert _runs(full, "Table 6", "Baseline (Restormer)", "tasks=4 (B+N+R+H)") == base
    assert _runs(full, "Table 6", "DINO-IR", "tasks=4 (B+N+R+H)") == dino
    assert _runs(full, "Table 4", "DINO-IR") == dino
    ablation = {_runs(full, "Table 3", m) for m in ("Baseline (Restormer)", "with PSF (Restormer)",
                                                   "with DPC (Restormer)", "DINO-IR")}
    assert len(ablation) == 4
    gating = next(r.source.study for r in full.rows if r.key.table == "Text")
    assert tuple(r.key() for r in gating.deps) == dino
    for r in _rows(full, "Table 3").values():   # every variant is paired with the baseline run on its images
        src = r.source
        if r.key.method != "Baseline (Restormer)":
            assert tuple(x.key() for x in src.baseline) == base and src.baseline_label == "Baseline (Restormer)"


def test_what_each_run_trains(full):
    runs = {r.key(): r for r in full.runs()}
    assert len(runs) == 15 + 5 + 8   # + DnCNN, MPRNet, NAFNet, AirNet, PromptIR in DINO-IR's setting + Fig. 1a
    base = runs[_runs(full, "Table 1", "Restormer")[0]]
    dino = runs[_runs(full, "Table 1", "DINO-IR")[0]]
    psf = runs[_runs(full, "Table 3", "with PSF (Restormer)")[0]]
    dpc = runs[_runs(full, "Table 3", "with DPC (Restormer)")[0]]
    mixed = [("did:train-clean", "blur"), ("did:train-clean", "noise15|noise25|noise50"), ("did:train", "rain"),
             ("reside_ots:train", "haze")]
    for r in (base, dino, psf, dpc):
        assert [(s.dataset, s.task) for s in r.train] == mixed
        assert r.schedule.batch == 8 and r.schedule.patch == 160
    assert base.net == "Restormer" and [t.name for t in base.terms] == ["l1"]
    assert dpc.net == "Restormer" and [t.name for t in dpc.terms] == ["l1", "dpc"]
    assert psf.net == "DINO-IR" and [t.name for t in psf.terms] == ["l1"]
    assert dino.net == "DINO-IR" and dict(dino.net_kw)["layers"] == (2, 6, 11)
    dpc_term = next(t for t in dino.terms if t.name == "dpc")
    assert dpc_term.weight == 1.0 and dpc_term.get("layers") == (0, 1, 2, 3)   # lambda = 1, shallow blocks
    v0 = runs[_runs(full, "Table 5", "V0 (Restormer)")[0]]
    assert v0.net == "Restormer" and not v0.net_kw and [t.name for t in v0.terms] == ["l1"]   # no DINOv2 at all
    assert [(s.dataset, s.task) for s in v0.train] == [("rain100l:train", "rain")]
    for i, layer in enumerate((2, 6, 11), 1):
        m = next(k for k in _rows(full, "Table 5") if k.method.startswith(f"V{i} ")).method
        v = runs[_runs(full, "Table 5", m)[0]]
        assert v.net == "DINO-IR" and dict(v.net_kw)["layers"] == (layer,) and v.train == v0.train
    single = runs[_runs(full, "Table 2", "DINO-IR")[0]]
    assert [(s.dataset, s.task) for s in single.train] == [("bsd400:train", "noise15|noise25|noise50"),
                                                           ("wed:train", "noise15|noise25|noise50")]
    assert single.schedule.batch == 4 and single.schedule.patch == 128
    from irlib.papers.dinoir import plan as plan_mod

    per_sigma = plan_mod.build(plan.get_profile("full"), per_sigma=True)
    assert len(per_sigma.runs()) == 17 + 5 + 8


def test_v0_and_the_baseline_build_without_dinov2():
    from irlib.engine.features import FeatureBank
    from irlib.engine.runner import build_model

    smoke = plan.build("dinoir", "smoke")
    fb = FeatureBank("random", "tiny")
    for r in smoke.runs():
        m = build_model(r, fb)
        uses_dino = hasattr(m, "dino") and getattr(m, "use_psf", False)
        assert uses_dino == (r.net == "DINO-IR"), r.label
    assert len(smoke.runs()) <= 28 and all(r.size == "tiny" for r in smoke.runs())   # 15 own + 5 comparisons


def test_avg_is_the_mean_of_exactly_the_seven_task_rows(full):
    for method in ("Restormer", "DINO-IR"):
        for metric in ("PSNR", "SSIM"):
            avg = next(r for r in full.rows if r.key == RowKey("dinoir", "Table 1", method, "multi-task", "Avg",
                                                               metric))
            assert isinstance(avg.source, Average)
            tasks = {k for k in _rows(full, "Table 1", method) if k.dataset != "Avg" and k.metric == metric}
            assert len(tasks) == 7 and set(avg.source.parts) == tasks and len(avg.source.parts) == 7


def test_study_rows_use_the_reference_keys(full):
    ref = reference("dinoir")
    for table in ("Fig. 3b", "Text"):
        keys = {tuple(k.as_dict().values()) for k, r in _rows(full, table).items() if isinstance(r.source, Study)}
        assert keys == set(map(tuple, ref[ref.table == table][KEY].values))
    fig5 = next(s for s in full.studies() if s.name == "Fig. 5")
    derainer = fig5.deps[0]   # Fig. 5's "little rain" comes from a trained derainer: the Table 1 Restormer
    assert derainer.key() == _runs(full, "Table 1", "Restormer")[0] and any(s.task == "rain" for s in derainer.train)


def test_runner_pools_clean_sources_and_draws_alternative_tasks(tmp_path):
    from irlib.data import PatchBatches
    from irlib.data.splits import synth
    from irlib.engine.runner import effective_schedule, training_batches

    root = tmp_path / "data"
    synth(root, n=2, only=["bsd400", "wed", "did", "reside_ots"])
    p = plan.build("dinoir", "rehearse")
    single = next(r for r in p.runs() if r.train[0].dataset == "bsd400:train")
    b = training_batches(single, str(root), effective_schedule(single))
    assert isinstance(b, PatchBatches) and len(b.images) == 4          # BSD400 + WED pooled into one set
    assert tuple(b.tasks) == ("noise15", "noise25", "noise50")
    seen = {t for step in range(12) for t in b(step)["task"]}
    assert seen == {"noise15", "noise25", "noise50"}
    b4 = next(r for r in p.runs() if len(r.train) == 4)
    mixed = training_batches(b4, str(root), effective_schedule(b4))
    assert [type(s).__name__ for s in mixed.sources] == ["PatchBatches", "PatchBatches", "PairedPatches", "PairedPatches"]
    assert pd.Series([mixed(k)["task"][0] for k in range(4)]).tolist()[0] == "blur"


def test_fig1a_single_task_runs_and_figure(full, tmp_path):
    """Fig. 1a: one Restormer and one DINO-IR per task, each trained on that task's source alone with the
    single-task values, measured on exactly that task's Table 1 columns; the figure pairs them with Table 1."""
    import matplotlib

    matplotlib.use("Agg")
    from irlib.engine.drawing import FigureContext
    from irlib.papers.dinoir.figures import single_vs_multi

    rows = [r for r in full.rows if r.key.table == "Fig. 1a"]
    assert len(rows) == 14 and all(r.extra and r.key.metric == "PSNR" for r in rows)
    t1 = {(r.key.method, r.key.setting.replace("multi-task", "single-task"), r.key.dataset) for r in full.rows
          if r.key.table == "Table 1" and r.key.dataset != "Avg" and r.key.method in ("Restormer", "DINO-IR")}
    assert {(r.key.method, r.key.setting, r.key.dataset) for r in rows} == t1
    for r in rows:
        (run,) = r.source.runs
        assert len(run.train) == 1 and run.schedule.batch == 4 and run.schedule.patch == 128
        task = r.source.eval.testset.task
        assert run.train[0].task == task or (task.startswith("noise") and run.train[0].task.startswith("noise"))
    spec = next(f for f in full.figures if f.figure == "Fig. 1a")
    table = pd.DataFrame([{**r.key.as_dict(), "value": 30.0 + i * 0.1} for i, r in enumerate(full.rows)
                          if r.key.table in ("Table 1", "Fig. 1a") and r.key.metric == "PSNR"])
    ctx = FigureContext(spec, None, table, tmp_path, "data", "cpu", None, "rehearse")
    png = single_vs_multi(ctx)
    assert png.is_file() and "trained on one task" in png.with_suffix(".json").read_text()
