"""DiffLoss: its plan (Tables 1-4), the h-space SVD study and the CUB classification study, and figures."""
from .. import Paper

PAPER = Paper("diffloss", "DiffLoss — Diffusion Model as Constraint for Training Image Restoration Networks", 3,
              "diffloss.csv")
