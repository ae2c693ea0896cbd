"""The instruction set TextPromptIR's guidance is drawn from (``irlib/resources/prompts.json``)."""
from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

TASK_NAMES = {"noise15": "denoise", "noise25": "denoise", "noise50": "denoise", "rain": "derain", "haze": "dehaze",
              "blur": "deblur", "lowlight": "lowlight"}


@lru_cache(maxsize=None)
def prompt_set() -> dict:
    """Our instruction set: ``{'prompts': {task: [50 sentences]}, 'held_out': {task: [10 sentences]}}``."""
    return json.loads(resources.files("irlib.resources").joinpath("prompts.json").read_text())


def prompts_for(task: str, split: str = "train") -> list[str]:
    """Sentences for a task (``derain``, ``dehaze``, ``denoise``, ``deblur``, ``lowlight`` or a degradation name).
    ``split='train'`` excludes the held-out sentences, ``'test'`` returns only them, ``'all'`` every one."""
    t = TASK_NAMES.get(task, task)
    ps, held = prompt_set()["prompts"][t], set(prompt_set()["held_out"][t])
    if split == "all":
        return list(ps)
    if split == "test":
        return [p for p in ps if p in held]
    return [p for p in ps if p not in held]
