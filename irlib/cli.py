"""Command line: ``irlib reproduce``, ``irlib data fetch``, ``irlib notebooks sync``."""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="irlib", description="Reproduce SPN, TextPromptIR, DiffLoss and DINO-IR.")
    sub = ap.add_subparsers(dest="cmd", required=True)

    r = sub.add_parser("reproduce", help="run the notebooks with papermill and write the report")
    r.add_argument("--profile", choices=["smoke", "full"], default="smoke")
    r.add_argument("--only", action="append", help="notebook name prefix, e.g. spn or spn/tables (repeatable)")
    r.add_argument("--jobs", type=int, default=1)
    r.add_argument("--out", default="reports")
    r.add_argument("--device", default="cpu")
    r.add_argument("--data-root", default="data")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--timeout", type=int, default=1800, help="per-cell timeout in seconds")

    d = sub.add_parser("data", help="datasets")
    dsub = d.add_subparsers(dest="dcmd", required=True)
    f = dsub.add_parser("fetch", help="download a dataset from its manifest with checksum verification")
    f.add_argument("name")
    f.add_argument("--root", default="data")
    f.add_argument("--allow-unverified", action="store_true")
    f.add_argument("--force", action="store_true")
    dsub.add_parser("list", help="list the manifests")

    n = sub.add_parser("notebooks", help="notebook sources")
    n.add_argument("action", choices=["sync", "check"])

    a = ap.parse_args(argv)
    if a.cmd == "reproduce":
        from .reproduce import reproduce

        st = reproduce(a.profile, a.out, a.only, a.jobs, a.device, a.data_root, a.seed, a.timeout)
        print(st.to_string(index=False))
        print(f"report: {a.out}/{a.profile}/report.md")
        return 0 if (st["status"] == "ok").all() else 1
    if a.cmd == "data":
        from .data.datasets import DatasetError
        from .data.fetch import fetch, load_manifest, manifest_dir

        if a.dcmd == "list":
            for p in sorted(manifest_dir().glob("*.yaml")):
                m = load_manifest(p)
                print(f"{m['name']:14s} {m.get('description', '')}")
            return 0
        try:
            print(fetch(a.name, a.root, allow_unverified=a.allow_unverified, force=a.force))
        except DatasetError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        return 0
    if a.cmd == "notebooks":
        from .reproduce import sync_notebooks

        stale = sync_notebooks(check=a.action == "check")
        print("\n".join(stale) or "notebooks up to date")
        return 1 if (a.action == "check" and stale) else 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
