"""SPN — learning from history: its plan (Tables 1-9, Figs. 2, 4-6)."""
from .. import Paper

PAPER = Paper("spn", "SPN — Learning from History: Task-agnostic Model Contrastive Learning for Image Restoration",
              1, "spn.csv")
