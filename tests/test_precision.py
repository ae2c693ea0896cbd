"""Run precision (``RunSpec.precision``): DehazeFormer's runs ask for fp16 autocast with a GradScaler (IDKiro/DehazeFormer
train.py lines 43-52); a CUDA device runs it, a CPU falls back to fp32 and the run's done record says so."""
import pytest
import torch

from irlib import plan
from irlib.engine import Builder, EvalSpec, Profile, RunStore
from irlib.engine.jobs import build_trainer, run_precision
from irlib.engine.recipe import recipe
from irlib.engine.trace import trace_signature
from irlib.schedules import Schedule


def test_dehazeformer_recipe_says_fp16_and_others_fp32():
    p = plan.build("spn", "full")
    nets = {}
    for r in p.runs():
        nets.setdefault(r.net, set()).add(recipe(r)["precision"])
    assert nets["DehazeFormer-T"] == nets["DehazeFormer-S"] == nets["DehazeFormer-B"] == {"fp16 autocast"}
    assert nets["FFANet"] == nets["IDT"] == nets["EDSR-light"] == {"fp32"}
    df = next(r for r in p.runs() if r.net == "DehazeFormer-T")
    assert df.precision == "fp16" and df.replace(precision="fp32").key() != df.key()
    assert trace_signature(df) == trace_signature(df.replace(precision="fp32"))   # traced in fp32 either way


def test_precision_runs_on_cuda_only():
    assert run_precision("fp16", "cuda") == run_precision("fp16", "cuda:1") == "fp16"
    assert run_precision("fp16", "cpu") == "fp32" and run_precision("fp32", "cuda") == "fp32"
    with pytest.raises(ValueError, match="precision"):
        run_precision("bf8", "cpu")
    P = Profile("smoke", "tiny", "random", smoke_schedule=Schedule(2, 2, 32, 1e-3), scale="tiny")
    with pytest.raises(ValueError, match="precision"):
        Builder("spn", P).run("EDSR-light", net_kw={"scale": 4}, train=[("div2k:train-x4", "srx4")],
                              schedule=P.smoke_schedule, precision="half")


def test_a_cpu_run_of_an_fp16_recipe_records_the_fp32_fallback(tmp_path):
    P = Profile("smoke", "tiny", "random", smoke_schedule=Schedule(2, 2, 32, 1e-3), scale="tiny")
    B = Builder("spn", P)
    run = B.run("EDSR-light", net_kw={"scale": 4}, train=[("div2k:train-x4", "srx4")], schedule=P.smoke_schedule,
                precision="fp16", label="EDSR-light fp16")
    B.measure("Table 8", "EDSR-light", "lambda=0", "Set14", (run,),
              EvalSpec(B.testset("sr_benchmark:Set14-x4", "srx4"), channel="y", crop=4), ("PSNR",))
    store = RunStore(tmp_path / "runs")
    st = plan.execute(B.plan, store, plan.Context("data", store.root))
    assert list(st.state) == ["done"]
    done = store.done(run.key())
    assert done["precision_asked"] == "fp16" and done["precision"] == "fp32"
    assert recipe(run)["precision"] == "fp16 autocast"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 autocast runs on CUDA only")
def test_fp16_trainer_on_cuda_autocasts_and_scales():
    model = torch.nn.Conv2d(3, 3, 3, padding=1)
    seen = []

    def forward(net, batch):
        y = net(batch["lq"])
        seen.append(y.dtype)
        return y

    from irlib.losses import LOSSES

    batches = lambda step: {"lq": torch.rand(2, 3, 16, 16), "gt": torch.rand(2, 3, 16, 16)}  # noqa: E731
    tr = build_trainer(Schedule(3, 2, 16, 1e-3), model, {"l1": (1.0, LOSSES["l1"])}, batches, "cuda",
                       forward=forward, progress=False, amp=run_precision("fp16", "cuda"))
    tr.fit(3)
    assert seen and set(seen) == {torch.float16} and tr.scaler.is_enabled()
    assert next(model.parameters()).dtype == torch.float32   # master weights stay fp32
