"""`irlib reproduce` as a user meets it: preflight, parameters, wrong options, Ctrl-C, failing notebooks."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from irlib import plan
from irlib.engine.preflight import preflight

REPO = Path(__file__).resolve().parents[1]


def _nb(path: Path, code: str, extra_params: str = "") -> None:
    n = nbformat.v4.new_notebook()
    p = nbformat.v4.new_code_cell('profile = "smoke"\ndevice = "cpu"\ndata_root = "d"\nseed = 0\nout_dir = "o"\n' + extra_params)
    p.metadata["tags"] = ["parameters"]
    n.cells = [p, nbformat.v4.new_code_cell(code)]
    n.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(n, path)


WRITE_ROW = ("from irlib.engine import ROW_COLUMNS\nimport pandas as pd, os\nos.makedirs(out_dir, exist_ok=True)\n"
             "pd.DataFrame([dict(paper='spn', table='Table 8', method='EDSR-light', setting='lambda=0', dataset='Set14', "
             "metric='PSNR', value=1.0, profile=profile, weights='random', notes=str({note}))], columns=ROW_COLUMNS)"
             ".to_csv(out_dir + '/results.csv', index=False)\n")


@pytest.fixture
def nbdir(tmp_path, monkeypatch):
    d = tmp_path / "nbs"
    d.mkdir()
    monkeypatch.setenv("IRLIB_NOTEBOOKS", str(d))
    return d


def _cli(*args, env=None, **kw):
    return subprocess.run([sys.executable, "-m", "irlib.cli", *args], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, **(env or {})}, **kw)


def test_parameters_reach_the_notebook_and_wrong_ones_are_refused(nbdir, tmp_path):
    _nb(nbdir / "alpha.ipynb", WRITE_ROW.format(note="custom"), extra_params='custom = "default"\n')
    env = {"IRLIB_NOTEBOOKS": str(nbdir)}
    r = _cli("reproduce", "--out", str(tmp_path / "out"), "-p", "custom", "from-the-cli", env=env)
    assert r.returncode == 0, r.stderr
    rows = pd.read_csv(tmp_path / "out" / "smoke" / "results.csv")
    assert rows.notes.tolist() == ["from-the-cli"]
    bad = _cli("reproduce", "--out", str(tmp_path / "out"), "-p", "nosuch", "1", env=env)
    assert bad.returncode == 2 and "no selected notebook has a parameter 'nosuch'" in bad.stderr and "custom" in bad.stderr


def test_wrong_options_exit_2_with_the_valid_choices(nbdir, tmp_path):
    _nb(nbdir / "alpha.ipynb", "pass")
    env = {"IRLIB_NOTEBOOKS": str(nbdir)}
    r = _cli("reproduce", "--only", "spn/tables", "--out", str(tmp_path), env=env)
    assert r.returncode == 2 and "no notebook 'spn'" in r.stderr and "alpha" in r.stderr
    r = _cli("plan", "--only", "spn/tables")
    assert r.returncode == 2 and "Table 1" in r.stderr and "Traceback" not in r.stderr
    ro = tmp_path / "readonly"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as a user who can write anywhere")
        r = _cli("reproduce", "--out", str(ro), env=env)
        assert r.returncode == 2 and "not writable" in r.stderr and "Traceback" not in r.stderr
    finally:
        ro.chmod(0o700)


def test_unwritable_out_is_a_clear_error_even_as_root(nbdir, tmp_path):
    from irlib.reproduce import UsageError, writable

    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UsageError, match="not writable"):
        writable(blocker / "sub")


@pytest.mark.parametrize("inherited", ["default", "ignored"])
def test_sigint_stops_the_running_notebook_at_once_and_writes_status(nbdir, tmp_path, inherited):
    """Also when started with SIGINT ignored, as a non-interactive shell starts background jobs: `kill -INT` must
    still stop it (it did not, before reproduce installed its own handler)."""
    _nb(nbdir / "a_slow.ipynb", "import time\nopen(out_dir + '/started', 'w').write('1') if __import__('os').makedirs(out_dir, exist_ok=True) is None else 0\ntime.sleep(300)")
    _nb(nbdir / "b_queued.ipynb", WRITE_ROW.format(note="'ran'"))
    out = tmp_path / "out"
    p = subprocess.Popen([sys.executable, "-m", "irlib.cli", "reproduce", "--out", str(out)], cwd=REPO,
                         env={**os.environ, "IRLIB_NOTEBOOKS": str(nbdir)}, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True,
                         preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if inherited == "ignored" else None)
    started = out / "smoke" / "a_slow" / "started"
    deadline = time.time() + 120
    while not started.exists() and time.time() < deadline:
        time.sleep(0.2)
    assert started.exists(), "the slow notebook never started"
    t0 = time.time()
    p.send_signal(signal.SIGINT)
    rc = p.wait(60)
    took = time.time() - t0
    assert rc == 130 and took < 30, (rc, took, p.stderr.read()[-2000:])
    status = pd.read_csv(out / "smoke" / "status.csv")
    assert dict(zip(status.notebook, status.status)) == {"a_slow": "interrupted", "b_queued": "cancelled"}
    assert (out / "smoke" / "report.md").is_file()
    ps = subprocess.run(["pgrep", "-f", str(nbdir / "a_slow.ipynb")], capture_output=True, text=True)
    assert ps.stdout.strip() == "", "papermill/kernel still running after the signal"


def test_preflight_lists_exactly_what_is_missing(tmp_path, monkeypatch):
    from irlib.data.splits import synth

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    p = plan.build("spn", "full").select(["Table 4"])
    t = preflight([p], tmp_path / "data")
    assert set(t[t.state != "present"].item) == {"gopro:train", "gopro:test", "vgg19_imagenet"}
    assert (t[t.item == "gopro:test"].state == "manual").all()
    assert "test/{seq}/blur/{id}" in t[t.item == "gopro:test"].detail.iloc[0]  # the layout to unpack into
    synth(tmp_path / "data", n=1, side=32, only=["gopro"])
    t = preflight([p], tmp_path / "data")
    assert set(t[t.state != "present"].item) == {"vgg19_imagenet"}
    assert "irlib weights fetch vgg19_imagenet" in t[t.item == "vgg19_imagenet"].detail.iloc[0]
    # the smoke and rehearse profiles use random weights: only data is checked
    assert set(preflight([plan.build("spn", "rehearse").select(["Table 4"])], tmp_path / "data").kind) == {"data"}


def test_reproduce_stops_before_any_notebook_when_inputs_are_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    r = _cli("reproduce", "--profile", "full", "--only", "spn/Table 4", "--data-root", str(tmp_path / "none"),
             "--out", str(tmp_path / "out"), env={"TORCH_HOME": str(tmp_path / "torch")})
    assert r.returncode == 3 and "3 inputs are missing" in r.stderr, r.stderr[-2000:]
    assert "gopro:test" in r.stdout and "vgg19_imagenet" in r.stdout
    assert not (tmp_path / "out" / "full" / "spn").exists()  # no notebook started
