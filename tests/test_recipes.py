"""Every run of the full plan whose training context has a recipe fixture (tests/fixtures/recipes/<context>.json:
the release's value of each recipe dimension, with its source) has that recipe, or the plan declares the
difference with its reason (``RunSpec.declared``). An undeclared difference, or a declaration of a difference
that no longer exists, fails."""
import json
from pathlib import Path

import pytest

from irlib import plan
from irlib.engine.recipe import DIMENSIONS, compared, differences, matches, recipe

FIX = Path(__file__).parent / "fixtures" / "recipes"
FIXTURES = sorted(p for p in FIX.glob("*.json") if "dimensions" in json.loads(p.read_text()))


@pytest.fixture(scope="module")
def full():
    plans = {p: plan.build(p, "full") for p in ("spn", "textpromptir", "diffloss", "dinoir")}
    evals = {}
    for p in plans.values():
        for k, lst in p.evals().items():
            evals.setdefault(k, []).extend(lst)
    return plans, evals


def test_fixtures_name_a_source_for_every_value():
    assert len(FIXTURES) >= 40
    for path in FIXTURES:
        f = json.loads(path.read_text())
        assert f["release"]["repo"] and f["match"]["net"], path.name
        for d, v in f["dimensions"].items():
            assert d in DIMENSIONS, (path.name, d)
            s = v["source"]
            assert s["repo"] and s["file"] and ("line" in s or "at" in s), (path.name, d)


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_runs_match_their_release_or_declare_why(full, path):
    plans, evals = full
    f = json.loads(path.read_text())
    release = {d: v["value"] for d, v in f["dimensions"].items()}
    runs = [r for p in plans.values() for r in p.runs() if matches(r, f["match"])]
    assert runs, f"no run of the full plan belongs to {f['context']}"
    problems = []
    for r in runs:
        diff = differences(r, evals.get(r.key(), ()), release)
        declared = dict(r.declared)
        for d, (mine, theirs) in diff.items():
            if d not in declared:
                problems.append(f"{r.label}: {d} is {mine!r}, the release's {theirs!r} (undeclared)")
        for d, why in declared.items():
            assert why.strip(), f"{r.label}: declared {d} without a reason"
            if d in compared(release, evals.get(r.key(), ())) and d not in diff:
                problems.append(f"{r.label}: declares {d} but matches the release")
    assert not problems, "\n".join(problems[:20])


def test_every_run_of_the_full_plan_belongs_to_exactly_one_fixture(full):
    """No training context is left without its release's (or paper's) recipe, and no run is claimed twice."""
    plans, _ = full
    fixtures = {p.stem: json.loads(p.read_text())["match"] for p in FIXTURES}
    runs = {r.key(): r for p in plans.values() for r in p.runs()}
    owners = {k: [name for name, m in fixtures.items() if matches(r, m)] for k, r in runs.items()}
    assert len(runs) > 100
    assert not [runs[k].label for k, o in owners.items() if not o], "runs without a recipe fixture"
    assert not {runs[k].label: o for k, o in owners.items() if len(o) > 1}, "runs in two contexts"
    # the label pattern parts DINO-IR's one-task multi-task run from its single-task run on the same data
    blur = [r for r in runs.values() if r.paper == "dinoir" and r.net == "Restormer" and r.label.endswith("(B)")]
    assert sorted(owners[r.key()][0] for r in blur) == ["dinoir_multitask_restormer", "dinoir_singletask_restormer"]


def test_a_changed_recipe_is_caught(full):
    """The check can fail: one run with its augmentation set back to irlib's original rule differs undeclared."""
    plans, evals = full
    f = json.loads((FIX / "edsr_light_x4.json").read_text())
    release = {d: v["value"] for d, v in f["dimensions"].items()}
    run = next(r for r in plans["spn"].runs() if matches(r, f["match"]))
    assert "augment" not in differences(run, evals[run.key()], release)
    old = run.replace(augment="")
    assert differences(old, evals[run.key()], release)["augment"] == ("hflip", "dihedral8")
    assert set(recipe(run, evals[run.key()])) == set(DIMENSIONS)


def test_plan_runs_table_carries_the_recipe_columns(full):
    from irlib.engine.cost import run_costs
    from irlib.engine.recipe import recipe_columns

    plans, _ = full
    runs = [r for r in plans["spn"].runs() if r.net == "IDT" and "SPA" in r.label][:2]
    table = recipe_columns(run_costs(runs), runs, [plans["spn"]])
    assert len(table) == 2 and {"augment", "eval_tiles", "select", "declared", "rec_loss"} <= set(table.columns)
    assert list(table["eval_tiles"]) == ["128/20", "128/20"] and list(table["augment"]) == ["idt", "idt"]
    assert table["declared"].str.contains("steps: irlib choice").all() and (table["rec_loss"] == "1*neg_ssim[0,1]").all()
    spn_row = recipe_columns(run_costs(runs), runs, [plans["spn"]])["extra_terms"]
    assert (spn_row == "none").any() and spn_row.str.contains(r"spn \(VGG").any()


def test_rows_of_runs_with_declared_differences_say_so(full, tmp_path):
    """A reader of the report sees, on each row, that its run's recipe differs from the release and where."""
    plans, _ = full
    p = plans["spn"]
    rows = plan.gather(p, plan.RunStore(tmp_path / "empty"))
    by_key = {r.key(): r for r in p.runs()}
    for _, row in rows[rows.runs != ""].iterrows():
        dims = sorted({d for k in row.runs.split() for d, _ in by_key[k].declared})
        marked = "recipe differs from the release in:" in row.notes
        assert marked == bool(dims), (row.method, row.dataset, row.notes)
        if dims:
            assert f"in: {', '.join(dims)} (declared)" in row.notes
    assert rows.notes.str.contains("recipe differs").any()


VARIANTS = sorted((Path(__file__).parent / "fixtures" / "recipe_variants").glob("*.json"))


@pytest.mark.parametrize("path", VARIANTS, ids=lambda p: p.stem)
def test_plan_options_that_follow_a_release_match_it(path):
    """A plan option that exposes a release's recipe beside the paper's (e.g. SPN's ``ffanet="mclir"``) gives runs
    equal to that release's values in every dimension its fixture lists, with nothing declared; the default plan's
    runs of the same context are untouched by the option."""
    f = json.loads(path.read_text())
    variant = plan.build(f["plan"]["paper"], "full", **f["plan"]["options"])
    evals = variant.evals()
    release = {d: v["value"] for d, v in f["dimensions"].items()}
    runs = [r for r in variant.runs() if matches(r, f["match"])]
    assert runs
    for r in runs:
        assert differences(r, evals.get(r.key(), ()), release) == {}, r.label
        assert not r.declared, r.label
    default = {r.key() for r in plan.build(f["plan"]["paper"], "full").runs() if matches(r, f["match"])}
    assert default and not default & {r.key() for r in runs}


def test_the_mclir_ffanet_option_carries_the_releases_spn_settings():
    """Under ``ffanet="mclir"`` every FFANet+SPN run uses the release's SPN preset (VGG16 layers, λ=1e-3, copies
    started 0.1·fresh + 0.9·θ, w=0.1) with its history steps; Table 7's ablation keeps the paper's single steps."""
    from irlib import spn as spn_mod

    f = json.loads((Path(__file__).parent / "fixtures" / "recipe_variants" / "spn_ffanet_mclir.json").read_text())
    s = f["spn"]
    cfg = spn_mod.PUBLIC_CODE
    assert (cfg.lam, list(cfg.steps), cfg.w, cfg.init_mix, cfg.arch, list(cfg.layers), list(cfg.layer_weights)) == (
        s["lam"], s["steps"], s["w"], s["init_mix"], s["arch"], s["layers"], s["layer_weights"])
    p = plan.build("spn", "full", ffanet="mclir")
    terms = {r.label: dict(t.kw) for r in p.runs() if r.net == "FFANet" for t in r.terms if t.name == "spn"}
    assert terms["FFANet (ITS)+SPN"] == {"lam": 1e-3, "preset": "public_code", "steps": (100, 200, 500, 1000), "w": 0.1}
    assert terms["FFANet (ITS)+SPN (s=500)"]["steps"] == (500,) and terms["FFANet (ITS)+SPN (s=500)"]["preset"] == "public_code"
    other = [t for r in p.runs() if r.net != "FFANet" for t in r.terms if t.name == "spn"]
    assert other and all("preset" not in dict(t.kw) for t in other)
    with pytest.raises(ValueError, match="ffanet recipe must be one of paper, mclir"):
        plan.build("spn", "full", ffanet="basicsr")
