"""irlib — reproducibility package for SPN, TextPromptIR, DiffLoss and DINO-IR (image restoration).

Modules: ``metrics`` (PSNR/SSIM), ``data`` (degradations, offline photos, paired folders, fetch),
``train`` (trainer), ``models`` (Restormer, EDSR, FFA-Net, NAFNet, SwinIR, DehazeFormer, IDT, IAT, MSBDN,
GridDehazeNet), ``spn``, ``textprompt``, ``diffloss``, ``dinoir``, ``losses`` (VGG, CR, PCL, perceptual,
adversarial), ``classify`` (CUB top-1), ``bench`` (step-cost ratios), ``results`` (tidy rows, reference numbers),
``reproduce`` (papermill batch + report).
"""
__version__ = "0.1.0"
