"""The instruction set TextPromptIR's guidance is drawn from (``irlib/resources/prompts.json``).

The paper pairs every training image with one of 50 instructions per task that say the same thing in different
words. irlib's set is written by hand: 50 different instructions for each of derain, dehaze, denoise, deblur and
lowlight, 10 of which per task are held out (never used in training). "Different" is measured by
:func:`token_overlap`: no two instructions of a task share more than 70% of the smaller one's words.
"""
from __future__ import annotations

import json
import re
from functools import lru_cache
from importlib import resources

TASK_NAMES = {"noise15": "denoise", "noise25": "denoise", "noise50": "denoise", "rain": "derain", "haze": "dehaze",
              "blur": "deblur", "lowlight": "lowlight"}

_WORD = re.compile(r"[a-z0-9]+(?:['-][a-z0-9]+)*")


@lru_cache(maxsize=None)
def prompt_set() -> dict:
    """Our instruction set: ``{'note': str, 'prompts': {task: [50 sentences]}, 'held_out': {task: [10 of them]}}``."""
    return json.loads(resources.files("irlib.resources").joinpath("prompts.json").read_text())


def prompts_for(task: str, split: str = "train") -> list[str]:
    """Sentences for a task (``derain``, ``dehaze``, ``denoise``, ``deblur``, ``lowlight`` or a degradation name).
    ``split='train'`` excludes the held-out sentences, ``'test'`` returns only them, ``'all'`` every one."""
    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
    t = TASK_NAMES.get(task, task)
    if t not in prompt_set()["prompts"]:
        raise KeyError(f"no instructions for task {task!r}; known: {sorted(prompt_set()['prompts'])}")
    ps, held = prompt_set()["prompts"][t], set(prompt_set()["held_out"][t])
    if split == "all":
        return list(ps)
    if split == "test":
        return [p for p in ps if p in held]
    return [p for p in ps if p not in held]


def words(sentence: str) -> set[str]:
    """The lower-cased word set of a sentence: maximal runs of letters and digits, keeping internal apostrophes
    and hyphens ("it's", "rain-free" are one word each); punctuation is dropped."""
    return set(_WORD.findall(sentence.lower()))


def token_overlap(a: str, b: str) -> float:
    """|A & B| / min(|A|, |B|) over the :func:`words` of two sentences (the overlap coefficient): the share of the
    shorter sentence's words that the other also uses. 1.0 when one sentence's words are a subset of the other's."""
    wa, wb = words(a), words(b)
    if not wa or not wb:
        raise ValueError(f"sentence without words: {a!r} / {b!r}")
    return len(wa & wb) / min(len(wa), len(wb))
