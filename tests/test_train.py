import os
import subprocess
import sys
import textwrap

import pytest
import torch

from irlib.data import PatchBatches, sample_images
from irlib.losses import LOSSES
from irlib.models.nafnet import NAFNet
from irlib.train import StepWeight, Trainer, TrainingCollapsed


def _trainer(tmp_path, ckpt=True, **kw):
    torch.manual_seed(0)
    imgs = list(sample_images(48).values())
    return Trainer(NAFNet(4, (1, 1)), PatchBatches(imgs, 16, 2, ("noise25",), seed=3), {"l1": (1.0, LOSSES["l1"])},
                   lr=1e-3, ckpt_dir=tmp_path if ckpt else None, ckpt_every=2, progress=False, ema_decay=0.9, **kw)


def test_resume_reaches_the_same_weights(tmp_path):
    straight = _trainer(tmp_path / "a")
    straight.fit(6)
    first = _trainer(tmp_path / "b")
    first.fit(6, stop_after=4)  # "killed" after step 4 (checkpoint at 4)
    resumed = _trainer(tmp_path / "b")
    assert resumed.step == 4
    log = resumed.fit(6)
    for p, q in zip(straight.model.parameters(), resumed.model.parameters()):
        assert torch.allclose(p, q, atol=1e-6)
    for p, q in zip(straight.ema.model.parameters(), resumed.ema.model.parameters()):
        assert torch.allclose(p, q, atol=1e-6)
    assert list(log["step"]) == [1, 2, 3, 4, 5, 6]
    assert not list(tmp_path.glob("b/*.partial"))


def test_collapse_is_detected(tmp_path):
    bad = {"nan": (1.0, lambda out, b, m: out.mean() * float("nan"))}
    t = _trainer(tmp_path, ckpt=False)
    t.loss_terms = bad
    with pytest.raises(TrainingCollapsed, match="collapsed at step 0"):
        t.fit(3)
    t.on_collapse = "stop"
    log = t.fit(3)
    assert t.collapsed and bool(log["collapsed"].iloc[-1])


def test_loss_decreases_and_grad_clip_logged(tmp_path):
    t = _trainer(tmp_path, ckpt=False, grad_clip=0.5)
    log = t.fit(30)
    assert log["loss"].iloc[-5:].mean() < log["loss"].iloc[:5].mean()
    assert "grad_norm" in log


def test_ddp_under_torchrun(tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(textwrap.dedent("""
        import torch, os
        from irlib.data import PatchBatches, sample_images
        from irlib.losses import LOSSES
        from irlib.models.nafnet import NAFNet
        from irlib.train import Trainer
        torch.manual_seed(0)
        t = Trainer(NAFNet(4, (1,)), PatchBatches(list(sample_images(32).values()), 16, 2, ("noise25",)),
                    {"l1": (1.0, LOSSES["l1"])}, progress=False)
        t.fit(3)
        w = torch.cat([p.detach().flatten() for p in t.model.parameters()])
        g = [torch.zeros_like(w) for _ in range(2)]
        torch.distributed.all_gather(g, w)
        assert torch.allclose(g[0], g[1]), "DDP replicas diverged"
        with open(os.path.join(os.environ["DDP_OUT"], "rank" + os.environ["RANK"]), "w") as f:
            f.write(f"ok {t.batches.rank}")  # one file per rank: printed lines from two processes interleave
        torch.distributed.destroy_process_group()
    """))
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517", str(script)],
                       capture_output=True, text=True, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1", "DDP_OUT": str(tmp_path)})
    assert r.returncode == 0, r.stderr[-2000:]
    assert [(tmp_path / f"rank{i}").read_text() for i in (0, 1)] == ["ok 0", "ok 1"]  # both ranks finished, each its shard


def test_bf16_autocast_on_cpu_trains(tmp_path):
    t = _trainer(tmp_path, ckpt=False, amp="bf16")
    log = t.fit(3)
    assert len(log) == 3 and log["loss"].notna().all()


def test_step_weight_windows():
    w = StepWeight.window(1.0, stop=3, then=0.1)
    assert [w.at(t) for t in range(5)] == [1.0, 1.0, 1.0, 0.1, 0.1]
    f = StepWeight.window(2.0, start=2)
    assert [f.at(t) for t in range(4)] == [None, None, 2.0, 2.0]
    g = StepWeight.window(1.0, start=1, stop=3)
    assert [g.at(t) for t in range(4)] == [None, 1.0, 1.0, None]
    for bad in (((1, 1.0),), ((0, 1.0), (0, 2.0)), ()):
        with pytest.raises(ValueError):
            StepWeight(bad)
    with pytest.raises(ValueError, match="start < stop"):
        StepWeight.window(1.0, start=3, stop=3)


def test_terms_switch_on_and_off_at_their_steps():
    """A term off on a step is not computed; the forward sees the step and the names of the terms on; the
    total is the weighted sum of the terms on."""
    calls, seen = [], []

    def counted(out, batch, model):
        calls.append(batch["step"])
        return out.mean() * 0 + 2.0

    def fwd(net, batch):
        seen.append((batch["step"], batch["active"]))
        return net(batch["lq"])

    torch.manual_seed(0)
    imgs = list(sample_images(48).values())
    tr = Trainer(NAFNet(4, (1, 1)), PatchBatches(imgs, 16, 2, ("noise25",), seed=3),
                 {"l1": (StepWeight.window(1.0, start=2), LOSSES["l1"]),
                  "c": (StepWeight.window(1.0, stop=2, then=0.1), counted)}, lr=1e-3, progress=False, forward=fwd)
    log = tr.fit(4).set_index("step")
    assert calls == [0, 1, 2, 3]
    assert seen == [(0, ("c",)), (1, ("c",)), (2, ("l1", "c")), (3, ("l1", "c"))]
    assert log.l1.isna().tolist() == [True, True, False, False]
    assert log.loss.tolist()[:2] == [2.0, 2.0]
    assert log.loss.loc[3] == pytest.approx(log.l1.loc[3] + 0.1 * 2.0, rel=1e-6)
    off = Trainer(NAFNet(4, (1, 1)), PatchBatches(imgs, 16, 2, ("noise25",), seed=3),
                  {"l1": (StepWeight.window(1.0, start=5), LOSSES["l1"])}, progress=False)
    with pytest.raises(ValueError, match="no loss term is on at step 0"):
        off.fit(1)
