"""The plan's vocabulary: runs, test sets, evaluations, rows, studies and figures, all plain frozen data.

A *run* (:class:`RunSpec`) is one training of one network: the network and its arguments, the loss terms, the
training data, the schedule, the seed, and the profile knobs that change what is computed (network size,
feature-network weights, rehearsal limits). Its :meth:`~RunSpec.key` is a hash of all of that, so two identical
specs are one run in the store, and anything that changes the computation changes the key.

An *evaluation* (:class:`EvalSpec`) applies a finished run to a :class:`TestSet` under a metric convention.
A *row* (:class:`Row`) is one number of the paper's tables, keyed exactly like the reference CSVs, and says how
it is obtained: measured from runs (mean over seeds of the mean over images, with a paired bootstrap against its
baseline), averaged from other rows (the ``Avg`` columns), or read from a study. Nothing here imports torch.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from ..schedules import Schedule

KEY_COLUMNS = ("paper", "table", "method", "setting", "dataset", "metric")
ROW_KINDS = ("own", "comparison")
"""Classes of the rows a plan measures: the paper's ``own`` method, paired baselines and ablations; a
``comparison``: another method the authors trained and evaluated in their own setting (their numbers, not copied).
Rows copied from other work are the third class, ``cited`` (:meth:`irlib.engine.core.Builder.cite`)."""
ROW_CLASSES = ROW_KINDS + ("cited",)
SOURCE_NOT_STATED = "source not stated"


def freeze(kw: Mapping[str, Any] | Iterable[tuple[str, Any]] | None) -> tuple[tuple[str, Any], ...]:
    """A mapping as a sorted tuple of items (hashable, order-independent); lists become tuples."""
    items = dict(kw or {}).items()

    def fz(v: Any) -> Any:
        if isinstance(v, list):
            return tuple(fz(x) for x in v)
        if isinstance(v, dict):
            return freeze(v)
        return v

    return tuple(sorted((k, fz(v)) for k, v in items))


OMIT_DEFAULT = {"omit_default": True}   # field metadata: left out of the key while at its default


def _recipe_field(default: Any) -> Any:
    """A recipe option added after runs were stored: at its default it is left out of the key, so existing
    runs keep their keys and only runs whose recipe really changes get new ones."""
    return field(default=default, metadata=OMIT_DEFAULT)


def _jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = {f.name: _jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.compare
               and not (f.metadata.get("omit_default") and getattr(obj, f.name) == f.default)}
        out["__type__"] = type(obj).__name__
        return out
    if isinstance(obj, (tuple, list)):
        return [_jsonable(x) for x in obj]
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    return obj


def canonical_json(obj: Any) -> str:
    """Deterministic JSON of a spec (dataclasses flattened, keys sorted)."""
    return json.dumps(_jsonable(obj), sort_keys=True, separators=(",", ":"))


def digest(obj: Any, n: int = 16) -> str:
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:n]


@dataclass(frozen=True)
class Limits:
    """Caps of the rehearsal profile: the full plan's code paths, on CPU, in minutes."""

    steps: int = 2
    batch: int = 2
    patch: int = 64
    images: int = 2          # test images per test set
    ddim_steps: int = 2      # diffusion regeneration steps in studies
    image_side: int = 64     # side studies resize images to


@dataclass(frozen=True)
class Source:
    """One training source: ``dataset`` is a data reference (``manifest:split``, or ``offline`` for the
    offline photos) and ``task`` the degradation applied to clean images (``noise25``, ``srx4``, ``rain``…) or,
    for real pairs, the label the batch carries (TextPromptIR picks its instruction from it). ``subset`` keeps
    a fixed, seeded random subset of that many images (a paper's unpublished subset, e.g. "4,000 OTS images");
    ``weight`` is the source's share of the batches when several are mixed (``None``: equal turns).
    ``synth`` is how a clean image's degradation is stored: ``""`` float, unclipped (irlib's original rule),
    ``"uint8"`` clipped to [0, 255] and cast to uint8 by truncation (numpy ``astype``), as PromptIR/TextPromptIR's
    releases synthesise noise."""

    dataset: str
    task: str
    subset: int | None = None
    weight: float | None = None
    synth: str = _recipe_field("")


@dataclass(frozen=True)
class Term:
    """A loss term: registry ``name`` (see :mod:`irlib.engine.runner`), trainer ``weight`` and frozen kwargs.
    A kwarg whose value is a :class:`RunSpec` makes this run depend on that run's final weights."""

    name: str
    weight: float = 1.0
    kw: tuple[tuple[str, Any], ...] = ()

    def get(self, k: str, default: Any = None) -> Any:
        return dict(self.kw).get(k, default)


#: Training arithmetic a run may ask for (``RunSpec.precision``).
PRECISIONS = ("fp32", "fp16")
#: Ways of cutting training patches (``RunSpec.crop``).
CROPS = ("", "resize_center")
#: Best-checkpoint rules of ``RunSpec.select`` (``irlib.engine.jobs.improves``): name -> what is compared.
SELECT_RULES = {"psnr": "PSNR", "psnr_and_ssim": "PSNR and SSIM"}


@dataclass(frozen=True)
class RunSpec:
    """One training run. ``net`` is a :mod:`irlib.models.zoo` name, ``size`` ``full`` or ``tiny`` (smoke),
    ``weights`` the feature networks' weights (``pretrained`` or ``random``), ``limits`` the rehearsal caps."""

    paper: str
    net: str
    train: tuple[Source, ...]
    terms: tuple[Term, ...]
    schedule: Schedule
    seed: int = 0
    net_kw: tuple[tuple[str, Any], ...] = ()
    size: str = "full"
    weights: str = "pretrained"
    forward: str = ""                       # "", "text" (TextPromptIR guidance from the batch's task) or "airnet"
                                            # (two crops per sample, irlib.models.airnet.training_forward)
    text_encoder: str = ""                  # encoder for forward="text": hub id, local folder, or "task-bert:<base>"
    # () = final weights; (("best_every", n), ("on", TestSet)) = the best checkpoint by PSNR on that test set,
    # evaluated every n steps; optional ("rule", one of SELECT_RULES) and ("eval", EvalSpec: the convention measured)
    select: tuple[tuple[str, Any], ...] = ()
    limits: Limits | None = None
    # training augmentation, one of irlib.data.datasets.AUGMENTS; "" = irlib's original rule (paired: random
    # horizontal flip; clean images: random horizontal and vertical flips)
    augment: str = _recipe_field("")
    # arithmetic of the training step, one of PRECISIONS: "fp32", or "fp16" (autocast to float16 with a dynamic
    # GradScaler, as DehazeFormer's train.py) where a GPU runs it (irlib.engine.jobs.run_precision)
    precision: str = _recipe_field("fp32")
    # how training patches are cut, one of CROPS: "" a random patch-sized window of each pair (the usual rule);
    # "resize_center" each pair's short side resized to the patch side and centre-cropped (DiffLoss's release:
    # every image always gives the same patch, see irlib.data.datasets.resize_center)
    crop: str = _recipe_field("")
    # numbers the plan states on purpose where they differ from the release's recipe fixture: dimension -> reason
    declared: tuple[tuple[str, str], ...] = field(default=(), compare=False)
    label: str = field(default="", compare=False)   # human label, e.g. "EDSR-light+SPN x4"

    def key(self) -> str:
        return digest(self)

    def deps(self) -> tuple["RunSpec", ...]:
        """Runs whose final weights this run needs (e.g. a frozen pre-trained negative model)."""
        return tuple(v for t in self.terms for _, v in t.kw if isinstance(v, RunSpec))

    def replace(self, **kw: Any) -> "RunSpec":
        return dataclasses.replace(self, **kw)

    def with_terms(self, *terms: Term) -> "RunSpec":
        return dataclasses.replace(self, terms=self.terms + tuple(terms))

    @property
    def steps(self) -> int:
        return min(self.schedule.steps, self.limits.steps) if self.limits else self.schedule.steps


@dataclass(frozen=True)
class TestSet:
    """Test pairs: ``dataset`` as in :class:`Source`; ``task`` degrades clean images (empty for real pairs);
    ``seed`` fixes the degradation; ``limit`` keeps the first N images (rehearsal, or a protocol's subset);
    ``resize`` squares both images as :func:`irlib.data.datasets.resize_center` does."""

    dataset: str
    task: str = ""
    seed: int = 1234
    limit: int | None = None
    synth: str = _recipe_field("")    # as Source.synth
    # > 0: both images' short side resized to this and centre-cropped to a square first (DiffLoss's release,
    # irlib.data.datasets.resize_center); 0 = the images as they are
    resize: int = _recipe_field(0)


SSIM_MODES = ("", "dehazeformer", "skimage")


@dataclass(frozen=True)
class EvalSpec:
    """How a run is measured on a test set. ``channel``/``crop`` follow the field's convention (SR: ``y`` and
    crop = scale; deraining: ``y``; dehazing/deblurring/denoising: ``rgb``); ``forward`` ``tlc`` evaluates
    NAFNet with test-time local statistics as its release does; ``metrics`` beyond PSNR/SSIM: LPIPS, FID.

    ``quantize``: round the output to the 8-bit grid before measuring (EDSR-PyTorch's ``quantize``, KAIR's
    ``tensor2uint``, results saved as PNG). ``ssim``: ``""`` full size; ``"dehazeformer"`` average-pools both
    images by ``max(1, round(min(H, W) / 256))`` first (DehazeFormer's test.py); ``"skimage"``: scikit-image's default
    SSIM (7x7 uniform window, sample covariance; PromptIR/TextPromptIR's val_utils). ``tile``/``overlap``: run the
    network on ``tile``-pixel windows overlapping by ``overlap`` and merge them weighted by the inverse distance
    to each window's centre (IDT's test_full_size.py: 128 and 20); 0 = the whole image at once."""

    testset: TestSet
    channel: str = "rgb"
    crop: int = 0
    forward: str = ""
    metrics: tuple[str, ...] = ("PSNR", "SSIM")
    quantize: bool = _recipe_field(False)
    ssim: str = _recipe_field("")
    tile: int = _recipe_field(0)
    overlap: int = _recipe_field(0)

    def key(self) -> str:
        return digest(self)


@dataclass(frozen=True)
class RowKey:
    paper: str
    table: str
    method: str
    setting: str
    dataset: str
    metric: str

    def as_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Measure:
    """Value = mean over ``runs`` (seeds) of the mean over the test images of ``metric``; with ``baseline``
    runs (same seeds, same evaluation) the row also gets the paired-bootstrap gain over them."""

    runs: tuple[RunSpec, ...]
    eval: EvalSpec
    baseline: tuple[RunSpec, ...] = ()
    baseline_label: str = ""


@dataclass(frozen=True)
class Average:
    """Value = mean of its parts (the tables' ``Avg`` columns): other rows, or measurements that are not rows
    of their own (Table 6 of SPN prints only the average over four test sets), given with their ``metric``."""

    parts: tuple[RowKey | tuple[Measure, str], ...]


@dataclass(frozen=True)
class StudySpec:
    """An analysis that is not a train-and-test: ``fn`` (``module:function``) is called with the study context
    and ``kw``; it returns a DataFrame of rows (columns of :data:`KEY_COLUMNS` minus paper, plus ``value``) and
    may store arrays for the figures. ``deps`` are runs whose final weights it loads."""

    paper: str
    name: str
    fn: str
    kw: tuple[tuple[str, Any], ...] = ()
    deps: tuple[RunSpec, ...] = ()
    weights: str = "pretrained"
    size: str = "full"
    limits: Limits | None = None

    def key(self) -> str:
        return digest(self)


@dataclass(frozen=True)
class Study:
    """Value = the study's row with this row's (table, method, setting, dataset, metric)."""

    study: StudySpec


@dataclass(frozen=True)
class Row:
    """One planned number. ``extra`` rows are measurements the paper reports only as a figure or in words
    (e.g. DINO-IR Fig. 5's feature distances): they are emitted and reported, but have no reference number.
    ``kind`` is the row's class (:data:`ROW_KINDS`): the paper's ``own`` method, baselines and ablations, or a
    ``comparison``: another method the authors trained and evaluated in their own setting."""

    key: RowKey
    source: Measure | Average | Study
    notes: str = ""
    extra: bool = False
    kind: str = "own"


@dataclass(frozen=True)
class FigureSpec:
    """A figure the notebook draws: ``fn`` (``module:function``) gets the figure context and ``kw``; ``runs`` /
    ``studies`` are what it needs from the store; ``testset`` the images it shows."""

    paper: str
    figure: str
    title: str
    fn: str
    kw: tuple[tuple[str, Any], ...] = ()
    runs: tuple[RunSpec, ...] = ()
    studies: tuple[StudySpec, ...] = ()
    testset: TestSet | None = None


@dataclass(frozen=True)
class Excluded:
    """A reference row the plan does not reproduce, and why (``kind`` as for :class:`Row`)."""

    key: RowKey
    reason: str
    kind: str = "own"
