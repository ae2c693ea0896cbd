"""Data: seeded degradations, the offline photo set, paired folders, manifests and verified fetch."""
from .datasets import (DatasetError, PairedFolder, PairedPatches, PatchBatches, load_image, make_test_pairs, sample_images,
                       save_image, split_samples)
from .degrade import add_haze, add_noise, add_rain, bicubic_down, degrade, gaussian_blur, low_light
from .fetch import ChecksumError, fetch, load_manifest

__all__ = ["DatasetError", "ChecksumError", "PairedFolder", "PairedPatches", "PatchBatches", "load_image", "save_image",
           "make_test_pairs", "sample_images", "split_samples", "degrade", "add_noise", "add_rain", "add_haze",
           "gaussian_blur", "bicubic_down", "low_light", "fetch", "load_manifest"]
