import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # under `pytest -n N` every worker is one of N processes sharing the cores: one torch thread each (the
    # notebook tests' own workers already run one thread per job)
    os.environ.setdefault("OMP_NUM_THREADS", "1")

_FIRST = "tests/test_rehearsal.py::"
_LAST = "tests/test_results_notebooks.py::test_smoke_reproduction_of_all_notebooks"


def pytest_collection_modifyitems(config, items):
    """The full-profile rehearsal first and the smoke reproduction last: with ``-n 2 --dist worksteal`` the two
    longest tests (each keeping two cores busy part of the time) then start on different workers at once, and
    the idle worker steals the short tests queued behind the rehearsal."""
    first = [i for i in items if i.nodeid.startswith(_FIRST)]
    last = [i for i in items if i.nodeid.startswith(_LAST)]
    rest = [i for i in items if i not in first and i not in last]
    items[:] = first + rest + last
