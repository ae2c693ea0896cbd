"""`irlib weights fetch` + `irlib eval` end to end: a released checkpoint served from 127.0.0.1, verified, loaded
strictly, and evaluated on a tiny paper-layout test set with the field's metric convention."""
import functools
import hashlib
import http.server
import threading

import pandas as pd
import pytest
import torch
import yaml

from irlib.cli import main
from irlib.data.splits import synth
from irlib.metrics import measure
from irlib.models.swinir import SwinIR


@pytest.fixture
def served(tmp_path):
    www = tmp_path / "www"
    www.mkdir()
    torch.manual_seed(0)
    net = SwinIR.light(4)
    torch.save({"params": net.state_dict()}, www / "swinir_light_x4.pth")  # BasicSR/KAIR container
    torch.save({"params": {"wrong.weight": torch.zeros(1)}}, www / "wrong.pth")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_port}", www, net
    srv.shutdown()


def _manifest(folder, name, url, sha):
    m = yaml.safe_load(open("data_manifests/weights/swinir_light_x4.yaml"))
    m.update(name=name, url=url, sha256=sha, filename=url.rsplit("/", 1)[1])
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(m))


def test_fetch_then_eval_a_released_checkpoint(served, tmp_path, monkeypatch, capsys):
    url, www, net = served
    mdir = tmp_path / "manifests"
    mdir.mkdir()
    sha = hashlib.sha256((www / "swinir_light_x4.pth").read_bytes()).hexdigest()
    _manifest(mdir, "swinir_light_x4", f"{url}/swinir_light_x4.pth", sha)
    _manifest(mdir, "corrupt", f"{url}/swinir_light_x4.pth", "0" * 64)
    _manifest(mdir, "wrong", f"{url}/wrong.pth", hashlib.sha256((www / "wrong.pth").read_bytes()).hexdigest())
    monkeypatch.setenv("IRLIB_WEIGHT_MANIFESTS", str(mdir))
    wroot, data = tmp_path / "weights", tmp_path / "data"
    assert main(["weights", "fetch", "corrupt", "--root", str(wroot)]) == 2
    assert not (wroot / "corrupt").exists()                      # nothing half-written is left
    assert main(["weights", "fetch", "swinir_light_x4", "--root", str(wroot)]) == 0
    synth(data, n=2, side=32, only=["sr_benchmark", "manga109"])
    out = tmp_path / "released"
    assert main(["eval", "swinir_light_x4", "--data-root", str(data), "--weights-root", str(wroot), "--out", str(out)]) == 0
    rows = pd.read_csv(out / "results.csv")
    assert set(rows.dataset) == {"Set14", "B100", "Urban100", "Manga109"} and set(rows.metric) == {"PSNR", "SSIM"}
    assert (rows.weights == "released").all() and (rows.method == "SwinIR-light").all() and (rows.setting == "x4").all()
    # the Set14 PSNR equals an independent computation: the same weights, the official LR, Y channel, 4-px crop
    from irlib.data.splits import load_split

    net.eval()
    vals = []
    for lq, gt in load_split(data, "sr_benchmark:Set14-x4"):
        with torch.no_grad():
            y = net(lq[None]).clamp(0, 1)
        vals.append(float(measure(y, gt[None], channel="y", crop_border=4)["PSNR"][0]))
    got = rows[(rows.dataset == "Set14") & (rows.metric == "PSNR")].value.iloc[0]
    assert got == pytest.approx(sum(vals) / len(vals), abs=1e-4)
    # a checkpoint of another network is refused with the names of the keys that do not fit
    assert main(["weights", "fetch", "wrong", "--root", str(wroot)]) == 0
    capsys.readouterr()
    assert main(["eval", "wrong", "--data-root", str(data), "--weights-root", str(wroot), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "wrong.weight" in err and "missing" in err
