"""DINO-IR: its plan (Tables 1-6), the DINOv2 robustness studies and figures."""
from .. import Paper

PAPER = Paper("dinoir", "DINO-IR — Multi-task Image Restoration Guided by Robust DINO Features", 4, "dinoir.csv")
