"""DiffLoss's plan against the paper: every own row planned under the reference's key, each "w/ DiffLoss" run
is its baseline plus the paper's γ·DiffLoss term and nothing else, Table 3 / Fig. 7 keep the best checkpoint,
the rehearsal feeds the real ADM small images; and one Table 1 pair rehearsed end to end on synthetic data."""
import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from irlib import plan
from irlib.engine import Measure, RunStore, Study
from irlib.engine import spec as plan_spec
from irlib.papers.diffloss import plan as D
from irlib.papers.diffloss import studies as dls
from irlib.results import reference

KEY = ["paper", "table", "method", "setting", "dataset", "metric"]


@pytest.fixture(scope="module")
def full():
    return plan.build("diffloss", "full")


def _measures(p, table):
    return [r for r in p.rows if r.key.table == table and isinstance(r.source, Measure)]


def test_rows_are_the_references_own_rows(full):
    ref = reference("diffloss")
    cited = full.cited["Table 1"][0]
    own = ref[~((ref.table == "Table 1") & ref.method.isin(cited))]
    frame = full.frame()
    planned = frame[~frame.extra]
    assert planned.groupby("table").size().to_dict() == own.groupby("table").size().to_dict() == {
        "Table 1": 24, "Table 2": 12, "Table 3": 12, "Table 4": 9}
    assert set(map(tuple, planned[KEY].values)) == set(map(tuple, own[KEY].values))
    assert set(cited) == {"AOD-Net", "FFA-Net", "AECR-Net", "DerainNet", "RESCAN", "PreNet", "EnlightenGAN",
                          "RetiNexNet", "DRBN"}
    assert not full.excluded
    extra = frame[frame.extra]   # numbers the paper only draws: Fig. 7's sweep, Fig. 2b's distances
    assert extra.groupby("table").size().to_dict() == {"Fig. 7": 2 * len(D.FIG7_GAMMAS), "Fig. 2b": 12}
    assert set(extra[extra.table == "Fig. 7"].setting) >= {"gamma=0; lambda=0", "gamma=0.001; lambda=0"}


def test_study_groups_are_the_diffloss_modules():
    from irlib.papers.diffloss import studies as dls

    assert D.STUDY_GROUPS == dls.STUDY_GROUPS


def test_labels_and_networks(full):
    t1 = {r.key.method: r.source.runs[0].net for r in _measures(full, "Table 1")}
    assert t1 == {n: n for n in ("FSDGN", "TaylorFormer", "RCD-Net", "EfDeRain", "DeepLPF", "IAT")} | {
        f"w/ DiffLoss ({n})": n for n in ("FSDGN", "TaylorFormer", "RCD-Net", "EfDeRain", "DeepLPF", "IAT")}
    assert {r.source.runs[0].net for r in _measures(full, "Table 3")} == {"MSBDN"}
    assert {r.source.runs[0].net for r in _measures(full, "Table 4")} == {"GridDehazeNet"}
    train = {r.source.runs[0].net: r.source.runs[0].train[0].dataset for r in _measures(full, "Table 1")}
    assert train["TaylorFormer"] == "dense_haze:train" and train["IAT"] == "lol:train"
    assert train["EfDeRain"] == D.DERAIN_TRAIN
    rain = [r for r in _measures(full, "Table 1") if r.key.dataset == "Rain100H"]
    assert {r.source.eval.channel for r in rain} == {"y"} and all("Rain13K" in r.notes for r in rain)


def test_with_diffloss_is_the_baseline_plus_the_paper_term_only(full):
    pairs = [r.source for r in _measures(full, "Table 1") if r.source.baseline]
    assert len(pairs) == 12  # six variants x (PSNR, SSIM)
    for m in pairs:
        (v,), (b,) = m.runs, m.baseline
        dl = [t for t in v.terms if t.name == "diffloss"]
        assert len(dl) == 1 and dl[0].weight == 0.001 and dict(dl[0].kw) == {"lam": 0.01, "target": "eps"}
        assert dataclasses.replace(v, terms=tuple(t for t in v.terms if t.name != "diffloss")) == b
        assert [t.name for t in b.terms] == ["mse_pm1"] and b.schedule.rec == "mse_pm1"   # the release's [-1, 1] L2
        assert (b.schedule.steps, b.schedule.batch, b.schedule.patch, b.schedule.lr) == (40_000, 4, 256, 1e-4)
        assert m.baseline_label == b.net and v.label == f"w/ DiffLoss ({b.net})"


def test_table3_4_and_fig7_selection_and_targets(full):
    dense = plan_spec.TestSet("dense_haze:test", "haze")
    t3 = {r.key.method: r.source for r in _measures(full, "Table 3") if r.key.metric == "PSNR"}
    for label, m in t3.items():
        sel = dict(m.runs[0].select)
        assert sel == {"best_every": D.BEST_EVERY, "on": dense}, label
        assert m.eval.metrics == ("LPIPS", "PSNR", "SSIM")
    assert [t.name for t in t3["L1 Loss (MSBDN)"].runs[0].terms] == ["l1"]
    assert [t.name for t in t3["Perceptual Loss (MSBDN)"].runs[0].terms] == ["l1", "perceptual"]
    assert [t.name for t in t3["Adversarial Loss (MSBDN)"].runs[0].terms] == ["l1", "adversarial"]
    assert [t.name for t in t3["DiffLoss (MSBDN)"].runs[0].terms] == ["mse_pm1", "diffloss"]
    assert all(m.baseline_label == "L1 Loss (MSBDN)" for k, m in t3.items() if k != "L1 Loss (MSBDN)")
    t4 = {r.key.method: r.source.runs[0] for r in _measures(full, "Table 4")}
    targets = {k: dict(next(t for t in r.terms if t.name == "diffloss").kw)["target"] for k, r in t4.items()}
    assert targets == {"a (GridNet)": "x0", "b (GridNet)": "xprev", "c (GridNet)": "eps"}
    assert all(r.select == () for r in t4.values())                    # the paper gives no best-of rule there
    assert all(r.source.runs[0].select == () for r in _measures(full, "Table 1"))
    sweep = next(s for s in full.studies() if s.name == "gamma-sweep")
    assert dict(sweep.kw)["gammas"] == D.FIG7_GAMMAS and len(sweep.deps) == len(D.FIG7_GAMMAS)
    for g, r in zip(D.FIG7_GAMMAS, sweep.deps):
        assert dict(r.select)["on"] == dense
        dl = [t for t in r.terms if t.name == "diffloss"]
        assert (dl[0].weight, dict(dl[0].kw)["lam"]) == (g, 0.0) if g else not dl
    # Fig. 1b's MSBDN pair: L2 alone (gamma=0) and the Table 3 DiffLoss run differ by the DiffLoss term only
    fig1b = next(f for f in full.figures if f.figure == "Fig. 1b")
    l2, with_dl = fig1b.runs[2], fig1b.runs[3]
    assert with_dl == t3["DiffLoss (MSBDN)"].runs[0] and l2 == sweep.deps[0]
    assert dataclasses.replace(with_dl, terms=with_dl.terms[:1]) == l2


def test_table2_and_fig2_studies_use_the_table1_efficient_restorers(full):
    t1 = {r.key.method: r.source.runs[0] for r in _measures(full, "Table 1")}
    want = tuple(t1[m] for n in ("TaylorFormer", "EfDeRain", "IAT") for m in (n, f"w/ DiffLoss ({n})"))
    t2 = [r for r in full.rows if r.key.table == "Table 2"]
    assert all(isinstance(r.source, Study) for r in t2) and len({r.source.study.key() for r in t2}) == 1
    cub = t2[0].source.study
    assert cub.deps == want and dict(cub.kw)["tasks"] == ("haze", "rain", "lowlight")
    assert all("[26]" in r.notes for r in t2)
    hs = next(s for s in full.studies() if s.name == "hspace-svd")
    assert hs.deps == want and dict(hs.kw)["side"] == 0 and dict(hs.kw)["ddim_steps"] == 20
    assert "cub:all" in full.datasets() and "nh_haze:all" in full.datasets()


def test_rehearsal_and_smoke_profiles(full):
    from irlib.engine.features import FeatureBank
    from irlib import losses
    from irlib.engine.runner import _term

    rh = plan.build("diffloss", "rehearse")
    assert len(rh.runs()) == len(full.runs()) == 24
    terms = [t for r in rh.runs() for t in r.terms if t.name == "diffloss"]
    assert len(terms) == 14 and all(t.get("size") == D.REHEARSE_ADM_SIDE for t in terms)
    assert all(t.get("size") is None for r in full.runs() for t in r.terms if t.name == "diffloss")
    # the runner builds the rehearsal's DiffLoss at the term's side, below the caps' image side
    spec = next(r for r in rh.runs() if any(t.name == "diffloss" for t in r.terms))
    fb = FeatureBank("random", "tiny")
    assert _term(terms[0], spec, None, fb, None, losses).size == D.REHEARSE_ADM_SIDE
    capped = dataclasses.replace(spec, limits=dataclasses.replace(spec.limits, image_side=16))
    assert _term(terms[0], capped, None, fb, None, losses).size == 16
    smoke = plan.build("diffloss", "smoke")
    assert len(smoke.runs()) == 16 and all(r.size == "tiny" for r in smoke.runs())
    assert {t.name for r in smoke.runs() for t in r.terms} == {"mse_pm1", "l1", "perceptual", "adversarial", "diffloss"}
    assert dict(next(s for s in smoke.studies() if s.name == "cub-top1").kw)["tasks"] == ("rain", "lowlight")


def test_adm_view_at_a_smaller_side_shares_weights_and_leaves_the_unet_alone():
    from irlib import diffloss as dl
    from irlib.papers.diffloss.figures import _at_side

    torch.manual_seed(0)
    unet = dl.ADMUNet(dl.ADM_TINY).eval().requires_grad_(False)
    view = _at_side(unet, 64)
    assert view.cfg.image_size == 64 and unet.cfg.image_size == 32 and _at_side(unet, 0) is unet
    assert all(a is b for a, b in zip(view.parameters(), unet.parameters()))
    x = torch.rand(1, 3, 64, 64)
    y = dls.regenerate(view, x, t_start=100, steps=1, strength=1.0)
    assert y.shape == x.shape and unet.h_hook is None and view.h_hook is None
    t = torch.tensor([100])
    assert torch.equal(view(x, t), unet(x, t))


def test_rehearsal_of_the_iat_pair_end_to_end(tmp_path):
    """Table 1's IAT pair on synthetic LOL: train (the real 256-px ADM architecture at 32 px), evaluate, gather
    with the paired bootstrap, draw a Fig. 1b-style comparison."""
    from irlib.data.splits import synth
    from irlib.engine.drawing import FigureContext, draw
    from irlib.engine.features import FeatureBank

    synth(tmp_path / "data", only=["lol"])
    p = plan.build("diffloss", "rehearse")
    p = dataclasses.replace(p, rows=[r for r in p.rows if r.key.table == "Table 1"
                                     and r.key.method in ("IAT", "w/ DiffLoss (IAT)")], figures=[])
    store = RunStore(tmp_path / "runs")
    st = plan.execute(p, store, plan.Context(tmp_path / "data", store.root))
    assert list(st.state) == ["done", "done"], st.error.tolist()
    rows = plan.gather(p, store)
    assert len(rows) == 4 and rows.value.notna().all() and (rows.n_images == 2).all()
    v = rows[(rows.method == "w/ DiffLoss (IAT)") & (rows.metric == "PSNR")].iloc[0]
    assert v.baseline == "IAT" and math.isfinite(v.gain) and v.measured_on.startswith("synthetic")
    base, var = (r.source.runs[0] for r in p.rows[:3:2])
    log = pd.read_csv(store.dir(var.key()) / "log.csv")
    assert len(log) == 2 and (log.diffloss > 0).all()
    assert "diffloss" not in pd.read_csv(store.dir(base.key()) / "log.csv")
    wa, wb = (torch.load(store.dir(r.key()) / "final.pt", weights_only=True)["model"] for r in (base, var))
    assert any(not torch.equal(wa[k], wb[k]) for k in wa)   # the DiffLoss gradient reached the restorer
    lol = D._fig_ts(plan.Builder("diffloss", "rehearse"), "lol:test", "lowlight")
    row = ("IAT, LOL", lol, "rgb", (("IAT", 0), ("w/ DiffLoss (IAT)", 1)))
    spec = plan.FigureSpec("diffloss", "Fig. 1b", "test", "irlib.papers.diffloss.figures:visual_grid",
                           (("rows", (row,)),), (base, var))
    ctx = FigureContext(spec, store, rows, tmp_path / "out", str(tmp_path / "data"), "cpu",
                        FeatureBank("random", "full"), "rehearse")
    (png,) = draw(spec, ctx)
    assert png.is_file() and png.with_suffix(".json").is_file()


def test_pixel_l2_is_on_the_releases_minus_one_to_one_scale():
    """DiffLoss's release: ``output * 2 - 1`` against a [-1, 1] target, ``mean_flat((output - gt) ** 2)``."""
    import torch

    from irlib.losses import LOSSES

    g = torch.Generator().manual_seed(0)
    out, gt = torch.rand(2, 3, 8, 8, generator=g), torch.rand(2, 3, 8, 8, generator=g)
    ref = ((out * 2 - 1) - (gt * 2 - 1)).pow(2).flatten(1).mean(1).mean()
    assert torch.allclose(LOSSES["mse_pm1"](out, {"gt": gt}), ref)
    assert torch.allclose(LOSSES["mse_pm1"](out, {"gt": gt}), 4 * LOSSES["mse"](out, {"gt": gt}))


# ------------------------------------------------------------------ the release protocol (protocol="release")
CENTER = json.loads((Path(__file__).parent / "fixtures" / "diffloss_center_crop.json").read_text())


def _center_input(h: int, w: int) -> np.ndarray:
    """The fixture's input rule: seeded uint8 noise, each row replaced by its running mean along the width."""
    img = np.random.default_rng(7).integers(0, 256, (h, w, 3), dtype=np.uint8)
    return (np.cumsum(img.astype(np.int64), axis=1) // np.arange(1, w + 1)[None, :, None]).astype(np.uint8)


@pytest.mark.parametrize("case", sorted(CENTER["cases"]))
def test_resize_center_equals_the_releases_center_crop(case):
    """irlib.data.datasets.resize_center gives the release's center_crop_arr output bit for bit (box halvings
    while the short side is at least 512, one bicubic resize to 256, the centred window), on uint8 and float input."""
    from irlib.data.datasets import resize_center

    c = CENTER["cases"][case]
    arr = _center_input(*c["input_hw"])
    out = resize_center(torch.from_numpy(arr).permute(2, 0, 1).contiguous(), CENTER["side"])
    got = out.permute(1, 2, 0).numpy().astype(np.int64)
    assert out.dtype == torch.uint8 and list(got.shape) == c["shape"]
    assert int(got.sum()) == c["sum"] and int((got ** 2).sum()) == c["sumsq"]
    for yx, rgb in c["pixels"].items():
        y, x = map(int, yx.split(","))
        assert got[y, x].tolist() == rgb, yx
    as_float = resize_center(torch.from_numpy(arr).permute(2, 0, 1).float() / 255, CENTER["side"])
    assert as_float.dtype == torch.float32 and torch.equal((as_float * 255).round().to(torch.uint8), out)


def test_release_protocol_is_the_public_codes_recipe_with_two_declared_differences():
    """protocol="release": every run matches the DiffLoss recipe fixtures except the two declared points (which
    15 test images the check sees); the terms are the release's (λ 0.001, no gradient); "release+grad" keeps the
    gradient; a wrong protocol or an unknown option is refused by name."""
    from irlib.engine.recipe import differences, matches

    rel = plan.build("diffloss", "full", protocol="release")
    fixtures = [json.loads(p.read_text()) for p in sorted((Path(__file__).parent / "fixtures" / "recipes")
                                                         .glob("diffloss_*.json"))]
    evals = rel.evals()
    seen = 0
    for r in rel.runs():
        (f,) = [f for f in fixtures if matches(r, f["match"])]
        release = {d: v["value"] for d, v in f["dimensions"].items()}
        diff = differences(r, evals.get(r.key(), ()), release)
        assert set(diff) <= set(D.RELEASE_DECLARED) and set(dict(r.declared)) == set(D.RELEASE_DECLARED), (r.label, diff)
        assert r.schedule.lr == 1e-3 and r.crop == "resize_center" and r.augment == "hflip"
        sel = dict(r.select)
        assert sel["best_every"] == 30 and sel["on"].limit == 15 and sel["on"].resize == 256
        for t in r.terms:
            if t.name == "diffloss":
                assert t.get("path") == "release" and t.get("detach_restored") is True
                assert t.get("lam", 0.0) in (0.0, 0.001)
        seen += 1
    assert seen == len(plan.build("diffloss", "full").runs())
    for ev in (e for lst in evals.values() for e in lst):
        assert ev.quantize and ev.channel == "rgb" and ev.testset.limit == 15 and ev.testset.resize == 256
    grad = plan.build("diffloss", "full", protocol="release+grad")
    assert {t.get("detach_restored") for r in grad.runs() for t in r.terms if t.name == "diffloss"} == {False}
    with_dl = {r.key() for r in rel.runs() if any(t.name == "diffloss" for t in r.terms)}
    assert len(with_dl) == 14 and not {r.key() for r in grad.runs()} & with_dl
    with pytest.raises(ValueError, match="protocol must be one of paper, release, release\\+grad"):
        plan.build("diffloss", "full", protocol="code")
    with pytest.raises(ValueError, match="unknown plan option.*protocol"):
        plan.build("spn", "full", protocol="release")


def test_release_protocol_end_to_end_gives_diffloss_no_gradient(tmp_path):
    """The rehearsed IAT pair under the public code's protocol: squared patches, a best-of check each step, and
    the DiffLoss terms computed without gradient, so the run with DiffLoss ends with exactly the baseline's
    weights (the release's DiffLoss cannot change what its restorer learns)."""
    from irlib.data.splits import synth

    synth(tmp_path / "data", only=["lol"])
    p = plan.build("diffloss", "rehearse", protocol="release")
    p = dataclasses.replace(p, rows=[r for r in p.rows if r.key.table == "Table 1"
                                     and r.key.method in ("IAT", "w/ DiffLoss (IAT)")], figures=[])
    store = RunStore(tmp_path / "runs")
    st = plan.execute(p, store, plan.Context(tmp_path / "data", store.root))
    assert list(st.state) == ["done", "done"], st.error.tolist()
    base, var = (r.source.runs[0] for r in p.rows[:3:2])
    assert var.crop == "resize_center" and dict(var.select)["on"].resize == 64
    log = pd.read_csv(store.dir(var.key()) / "log.csv")
    assert len(log) == 2 and (log.diffloss > 0).all()       # the terms are computed and logged ...
    wa, wb = (torch.load(store.dir(r.key()) / "final.pt", weights_only=True)["model"] for r in (base, var))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)         # ... but do not move the restorer
    done = store.done(var.key())
    assert done["selection"]["rule"] == "psnr" and len(done["selection"]["evaluations"]) == 2
    rows = plan.gather(p, store)
    assert (rows.n_images == 2).all() and rows.notes.str.contains("release protocol").all()


def test_the_protocol_parameter_shapes_the_plan_reproduce_checks(tmp_path):
    """``-p protocol release`` is a notebook parameter and a plan option: reproduce validates its value against the
    notebook's declared choices before anything runs, and builds the release protocol's plan for its own checks (a
    selection of release-protocol runs is known only under it)."""
    from irlib.reproduce import UsageError, reproduce

    key = next(r.key() for r in plan.build("diffloss", "smoke", protocol="release").runs())
    sel = tmp_path / "keys.txt"
    sel.write_text(key + "\n")
    kw = dict(profile="smoke", out=tmp_path / "out", only=["diffloss"], only_runs=sel, preflight_only=True)
    reproduce(params={"protocol": "release"}, **kw)
    with pytest.raises(UsageError, match=key):
        reproduce(**kw)
    with pytest.raises(UsageError, match="expected one of paper, release, release\\+grad"):
        reproduce(params={"protocol": "code"}, **kw)
