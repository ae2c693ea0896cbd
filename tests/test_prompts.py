"""irlib's TextPromptIR instruction set: 50 different instructions per task, held out by instruction."""
from __future__ import annotations

import itertools

import pytest

from irlib.prompts import prompt_set, prompts_for, token_overlap, words
from irlib.textprompt import prompts_for as reexported

TASKS = ("derain", "dehaze", "denoise", "deblur", "lowlight")


def test_fifty_unique_instructions_per_task():
    ps = prompt_set()["prompts"]
    assert set(ps) == set(TASKS)
    for t in TASKS:
        assert len(ps[t]) == 50 and len(set(ps[t])) == 50, t
        assert len({s.lower().strip(" .!?") for s in ps[t]}) == 50, t


def test_ten_held_out_per_task_by_instruction():
    ps, held = prompt_set()["prompts"], prompt_set()["held_out"]
    assert set(held) == set(TASKS)
    for t in TASKS:
        train, test = prompts_for(t, "train"), prompts_for(t, "test")
        assert len(test) == 10 and len(train) == 40 and not set(train) & set(test)
        assert set(train) | set(test) == set(ps[t]) == set(prompts_for(t, "all"))
        assert held[t] == ps[t][4::5]  # the rule the note states: the 5th, 10th, ..., 50th sentence
    assert "held-out" in prompt_set()["note"] and "70%" in prompt_set()["note"]


def test_degradation_names_map_to_tasks_and_bad_requests_fail():
    assert prompts_for("rain", "test") == prompts_for("derain", "test") == reexported("rain", "test")
    assert prompts_for("noise25") == prompts_for("denoise")
    with pytest.raises(ValueError, match="split"):
        prompts_for("derain", "validation")
    with pytest.raises(KeyError, match="snow"):
        prompts_for("snow")


def test_token_overlap_definition():
    assert words("It's a rain-free, DRY photo!") == {"it's", "a", "rain-free", "dry", "photo"}
    a, b = "Please remove the rain streaks from this photo.", "Please remove the rain streaks from the image."
    assert token_overlap(a, b) == token_overlap(b, a) == 6 / 7  # |A & B| = 6, |B| = 7 < |A| = 8
    assert token_overlap("Derain it.", "Could you derain it for me?") == 1.0  # a subset counts fully
    assert token_overlap("Clear the fog.", "Brighten my photo") == 0.0
    with pytest.raises(ValueError, match="without words"):
        token_overlap("...", "Clear the fog.")


def test_no_two_instructions_of_a_task_share_more_than_70_percent_of_words():
    for t in TASKS:
        worst = max(itertools.combinations(prompts_for(t, "all"), 2), key=lambda p: token_overlap(*p))
        assert token_overlap(*worst) <= 0.7, (t, worst)


def test_the_old_templated_style_fails_the_overlap_rule():
    """The previous set: 10 openers x the same 5 endings per task. Sentences sharing an opener differ only in the
    ending, so they exceed the threshold (and held-out openers reuse the training endings)."""
    openers = ["Please remove the rain streaks from", "Get rid of the rain in", "Derain"]
    endings = ["this photo.", "the image.", "my picture.", "this shot.", "the whole scene."]
    templated = [f"{o} {e}" for o in openers for e in endings]
    over = [(a, b) for a, b in itertools.combinations(templated, 2) if token_overlap(a, b) > 0.7]
    assert len(over) >= 10
    assert token_overlap("Get rid of the rain in this photo.", "Get rid of the rain in this shot.") == 7 / 8
