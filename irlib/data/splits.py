"""Dataset splits as the manifests declare them, the loaders that read those declarations, and
``irlib data synth`` which writes tiny images into every declared layout (for the rehearsal profile).

A manifest (``data_manifests/NAME.yaml``) has a ``splits`` mapping. Each split gives path *templates*
relative to ``<data_root>/NAME``, without the file extension:

* ``gt`` only: clean images (the plan degrades them with a seeded task: noise, bicubic, blur…);
* ``lq`` and ``gt``: real pairs. Fields in braces name parts of the path; the fields both templates share
  are the pairing key (``indoor/hazy/{id}_{beta}`` pairs with ``indoor/gt/{id}``; GoPro's
  ``test/{seq}/blur/{id}`` with ``test/{seq}/sharp/{id}``). A field may carry a regular expression
  (``{id:\\d+}``); otherwise it matches one or more characters other than ``/`` (shortest first).
* ``scale``: ground-truth size / low-quality size (SR pairs), default 1.
* ``kind: cub`` for CUB-200-2011's list files (read by :mod:`irlib.classify`).
* ``ids: [FIRST, LAST]``: only the images whose ``{id}`` field, read as a number, lies in this inclusive range
  (DIV2K's validation images 0801-0810, EDSR-PyTorch's ``--data_range 1-800/801-810``); ``irlib data synth``
  writes ids from ``FIRST`` on, zero-padded to its width.

A data reference is ``"NAME:SPLIT"``. Every error names the manifest and the split.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from .datasets import IMAGE_SUFFIXES, DatasetError, load_image, synth_image
from .fetch import load_manifest, manifest_dir

_FIELD = re.compile(r"\{(\w+)(?::([^{}]+))?\}")


@dataclass(frozen=True)
class Split:
    manifest: str
    name: str
    gt: str
    lq: str | None = None
    scale: int = 1
    kind: str = "images"
    note: str = ""
    ids: tuple[str, str] | None = None   # only the images whose {id} lies in this inclusive numeric range

    @property
    def ref(self) -> str:
        return f"{self.manifest}:{self.name}"

    @property
    def paired(self) -> bool:
        return self.lq is not None


def _template_regex(template: str) -> re.Pattern:
    out, pos = [], 0
    for m in _FIELD.finditer(template):
        out.append(re.escape(template[pos:m.start()]))
        out.append(f"(?P<{m.group(1)}>{m.group(2) or '[^/]+?'})")
        pos = m.end()
    out.append(re.escape(template[pos:]))
    return re.compile("^" + "".join(out) + "$")


def _template_glob(template: str) -> str:
    return _FIELD.sub("*", template) + ".*"


def _fields(template: str) -> list[str]:
    return [m.group(1) for m in _FIELD.finditer(template)]


def parse_ref(ref: str) -> tuple[str, str]:
    if ref.count(":") != 1:
        raise DatasetError(f"a data reference is 'MANIFEST:SPLIT', got {ref!r}")
    name, split = ref.split(":")
    return name, split


@lru_cache(maxsize=None)
def _manifest(name: str, folder: str) -> dict:
    return load_manifest(Path(folder) / f"{name}.yaml")


def get_split(ref: str) -> Split:
    """The declaration of ``NAME:SPLIT``; a clear error for an unknown manifest or split."""
    name, split = parse_ref(ref)
    m = _manifest(name, str(manifest_dir()))
    splits = m.get("splits") or {}
    if split not in splits:
        raise DatasetError(f"data_manifests/{name}.yaml declares no split {split!r}; it declares: "
                           f"{', '.join(sorted(splits)) or 'none'}")
    d = splits[split]
    if "gt" not in d:
        raise DatasetError(f"data_manifests/{name}.yaml: split {split!r} needs a 'gt' template")
    ids = d.get("ids")
    if ids is not None:
        ids = tuple(str(i) for i in ids)
        if len(ids) != 2 or not all(i.isdigit() for i in ids) or int(ids[0]) > int(ids[1]) or "id" not in _fields(d["gt"]):
            raise DatasetError(f"data_manifests/{name}.yaml: split {split!r}: 'ids' must be [FIRST, LAST] digit strings, "
                               f"FIRST <= LAST, for a template with an {{id}} field; got {d.get('ids')!r}")
    return Split(name, split, d["gt"], d.get("lq"), int(d.get("scale", 1)), d.get("kind", "images"), d.get("note", ""),
                 ids)


def all_splits() -> list[Split]:
    """Every split of every manifest in :func:`manifest_dir` (sorted by reference)."""
    out = []
    for p in sorted(manifest_dir().glob("*.yaml")):
        m = load_manifest(p)
        out += [get_split(f"{m['name']}:{s}") for s in (m.get("splits") or {})]
    return out


def _scan(base: Path, template: str, split: Split, side: str) -> dict[tuple, Path]:
    """Files under ``base`` matching ``template``, keyed by the values of its fields (in template order)."""
    rx = _template_regex(template)
    fixed = template.split("{", 1)[0].rsplit("/", 1)[0] if "/" in template.split("{", 1)[0] else ""
    if fixed and not (base / fixed).is_dir():
        raise DatasetError(f"{split.ref}: folder {base / fixed} is missing (the {side} images of data_manifests/"
                           f"{split.manifest}.yaml, split {split.name!r}); {_fetch_hint(split.manifest)}")
    found: dict[tuple, Path] = {}
    for p in sorted(base.glob(_template_glob(template))):
        if p.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        rel = p.relative_to(base).with_suffix("").as_posix()
        m = rx.match(rel)
        if m and _in_ids(split, m.groupdict().get("id")):
            found[tuple(m.groupdict().values())] = p
    if not found:
        raise DatasetError(f"{split.ref}: no images match {template!r} under {base} (data_manifests/"
                           f"{split.manifest}.yaml, split {split.name!r}); {_fetch_hint(split.manifest)}")
    return found


def _in_ids(split: Split, value: str | None) -> bool:
    """Whether an image's ``{id}`` is in the split's ``ids`` range (always, without one)."""
    if split.ids is None:
        return True
    return value is not None and value.isdigit() and int(split.ids[0]) <= int(value) <= int(split.ids[1])


def _fetch_hint(name: str) -> str:
    try:
        m = _manifest(name, str(manifest_dir()))
    except DatasetError:
        return "see data_manifests/"
    if any(f.get("url") is None for f in m.get("files", [])):
        return f"it is a manual download: {m.get('manual', 'see the manifest')}"
    return f"run `irlib data fetch {name}`"


def split_files(root: str | Path, ref: str) -> list[tuple[Path | None, Path]]:
    """``[(lq_path or None, gt_path), …]`` of a split, sorted by the pairing key. Raises
    :class:`DatasetError` for a missing folder, an image without a partner, or an unknown split."""
    sp = get_split(ref)
    if sp.kind != "images":
        raise DatasetError(f"{ref} is a {sp.kind!r} split; read it with its own loader")
    base = Path(root) / sp.manifest
    if not base.is_dir():
        raise DatasetError(f"{ref}: dataset folder {base} is missing; {_fetch_hint(sp.manifest)} "
                           f"(layout: data_manifests/{sp.manifest}.yaml)")
    gt = _scan(base, sp.gt, sp, "ground-truth")
    if not sp.paired:
        return [(None, gt[k]) for k in sorted(gt)]
    lq = _scan(base, sp.lq, sp, "degraded")
    shared = [f for f in _fields(sp.lq) if f in _fields(sp.gt)]
    gt_names, lq_names = _fields(sp.gt), _fields(sp.lq)
    gt_by_key = {tuple(dict(zip(gt_names, k))[f] for f in shared): p for k, p in gt.items()}
    pairs, orphans = [], []
    for k, p in sorted(lq.items()):
        partner = gt_by_key.get(tuple(dict(zip(lq_names, k))[f] for f in shared))
        (pairs.append((p, partner)) if partner is not None else orphans.append(p.name))
    if orphans:
        raise DatasetError(f"{ref}: {len(orphans)} degraded images have no ground truth matching {sp.gt!r}: "
                           f"{', '.join(orphans[:5])}{' …' if len(orphans) > 5 else ''} (data_manifests/{sp.manifest}.yaml)")
    used = {q for _, q in pairs}
    unused = [p.name for p in gt.values() if p not in used]
    if unused:
        raise DatasetError(f"{ref}: {len(unused)} ground-truth images have no degraded partner matching {sp.lq!r}: "
                           f"{', '.join(unused[:5])}{' …' if len(unused) > 5 else ''} (data_manifests/{sp.manifest}.yaml)")
    return pairs


def fingerprint(root: str | Path, ref: str) -> dict:
    """What a run records of the data it used from split ``ref`` under ``root``: the number of files, their total
    size, a hash of their names and sizes (``content``: the same for an exact copy elsewhere) and one of their
    names and modification times (``mtimes``: provenance). Raises :class:`DatasetError` when the split is missing."""
    sp = get_split(ref)
    base = Path(root) / sp.manifest
    if sp.kind == "images":
        files = sorted({p for pair in split_files(root, ref) for p in pair if p is not None})
    else:   # a dataset with its own loader (CUB): every file of its folder
        if not base.is_dir():
            raise DatasetError(f"{ref}: dataset folder {base} is missing; {_fetch_hint(sp.manifest)}")
        files = sorted(p for p in base.rglob("*") if p.is_file())
    content, mtimes, total = hashlib.sha256(), hashlib.sha256(), 0
    for p in files:
        st = p.stat()
        rel = p.relative_to(base).as_posix()
        content.update(f"{rel}\t{st.st_size}\n".encode())
        mtimes.update(f"{rel}\t{st.st_mtime_ns}\n".encode())
        total += st.st_size
    return {"manifest": sp.manifest, "split": sp.name, "files": len(files), "bytes": total,
            "content": content.hexdigest()[:16], "mtimes": mtimes.hexdigest()[:16]}


def load_split(root: str | Path, ref: str, limit: int | None = None, dtype: torch.dtype = torch.float32,
               files: list[tuple[Path | None, Path]] | None = None) -> list[tuple[torch.Tensor | None, torch.Tensor]]:
    """Images of a split as ``[(lq or None, gt), …]`` (3xHxW; float in [0, 1], or ``torch.uint8`` to keep big
    training sets in a quarter of the memory; ``files`` to read a subset of :func:`split_files`). Checks that
    paired sizes agree with the split's scale."""
    sp = get_split(ref)
    return [_read_pair(lq_p, gt_p, ref, sp.scale, dtype)
            for lq_p, gt_p in (split_files(root, ref) if files is None else files)[:limit]]


def _read_pair(lq_p: Path | None, gt_p: Path, ref: str, scale: int, dtype: torch.dtype):
    gt = _read(gt_p, dtype)
    lq = _read(lq_p, dtype) if lq_p is not None else None
    if lq is not None and (lq.shape[-2] * scale, lq.shape[-1] * scale) != tuple(gt.shape[-2:]):
        raise DatasetError(f"{ref}: size mismatch: {lq_p.name} is {lq.shape[-1]}x{lq.shape[-2]}, {gt_p.name} is "
                           f"{gt.shape[-1]}x{gt.shape[-2]} (expected scale {scale})")
    return lq, gt


class LazyPairs:
    """``[(lq or None, gt), …]`` of a split read from disk on demand (uint8, at most ``cache`` images kept), for
    training sets too large to hold in memory (OTS, DID). Sizes are checked when an image is read."""

    def __init__(self, files: list[tuple[Path | None, Path]], ref: str, scale: int = 1, cache: int = 256):
        self.files, self.ref, self.scale = files, ref, scale
        self._get = lru_cache(maxsize=cache)(self._load)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor | None, torch.Tensor]:
        return self._get(int(i))

    def _load(self, i: int) -> tuple[torch.Tensor | None, torch.Tensor]:
        return _read_pair(*self.files[i], self.ref, self.scale, torch.uint8)


def subset_files(files: list, n: int | None, seed: int = 0) -> list:
    """A fixed random subset of ``n`` entries (kept in their original order); all of them when ``n`` is None."""
    if n is None or n >= len(files):
        return list(files)
    keep = sorted(np.random.default_rng(seed).choice(len(files), size=n, replace=False))
    return [files[i] for i in keep]


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) from the file header, without decoding the pixels."""
    from PIL import Image

    with Image.open(path) as im:
        return im.size[1], im.size[0]


def _read(path: Path, dtype: torch.dtype) -> torch.Tensor:
    x = load_image(path)
    return x.mul(255).round().to(torch.uint8) if dtype == torch.uint8 else x.to(dtype)


# ---------------------------------------------------------------------------------------------- synth
def _fill(template: str, values: dict[str, str]) -> str:
    return _FIELD.sub(lambda m: values[m.group(1)], template)


def synth(root: str | Path, n: int = 3, side: int = 128, only: list[str] | None = None,
          test_side: int | None = None, train_refs: set[str] | None = None) -> list[Path]:
    """Write ``n`` tiny image (pairs) into every declared split of every manifest (or the manifests in
    ``only``) under ``root``, in the real folder layouts, so the full profile's loaders can be rehearsed.
    Images are ``side`` pixels square; with ``test_side`` and ``train_refs`` (the ``manifest:split`` refs some
    run trains on), splits that nothing trains on get ``test_side`` instead (evaluation is most of a
    rehearsal's time; training splits must stay at least one training patch).
    Returns the dataset folders written. Existing files are overwritten; nothing else is touched."""
    from PIL import Image

    root = Path(root)
    written = set()
    for sp in all_splits():
        if only and sp.manifest not in only:
            continue
        base = root / sp.manifest
        rng = np.random.default_rng(int.from_bytes(hashlib.sha256(sp.ref.encode()).digest()[:4], "little"))
        if sp.kind == "cub":
            from .cub import synth_cub

            synth_cub(base, n_classes=2, per_class=max(2, n), side=side)
            written.add(base)
            continue
        px = side if test_side is None or train_refs is None or sp.ref in train_refs else test_side
        for k in range(n):
            first = sp.ids[0] if sp.ids else ""
            ident = f"{int(first) + k:0{len(first)}d}" if first else f"{k + 10}"
            values = {f: (ident if f == "id" else "1") for f in set(_fields(sp.gt) + _fields(sp.lq or ""))}
            gt = synth_image(k, px, rng)
            path = base / (_fill(sp.gt, values) + ".png")
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(gt).save(path)
            if sp.paired:
                lq = Image.fromarray(gt)
                if sp.scale > 1:
                    lq = lq.resize((px // sp.scale, px // sp.scale), Image.BICUBIC)
                arr = np.asarray(lq).astype(np.float32) * 0.8 + rng.normal(0, 6, (lq.size[1], lq.size[0], 3))
                lq_path = base / (_fill(sp.lq, values) + ".png")
                lq_path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(lq_path)
        written.add(base)
    return sorted(written)
