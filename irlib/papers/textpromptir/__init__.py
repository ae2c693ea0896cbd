"""TextPromptIR: its plan (Tables 1-4), figures and the prompt-repetition study (Figs. 2, 4-10)."""
from .. import Paper

PAPER = Paper("textpromptir", "TextPromptIR — Textual Prompt Guided Image Restoration", 2, "textpromptir.csv")
