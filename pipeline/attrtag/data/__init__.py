"""The data stage: image decoding, evaluation preprocessing, manifests, batches, the demo world.

Torch-free except :mod:`.loader` (the training dataset), which is not imported here.
"""
from .images import REASONS, display_path, is_image_path, load_rgb
from .manifest import Manifest, Sample, read_manifest
from .preprocess import Preprocessing

__all__ = ["REASONS", "Manifest", "Preprocessing", "Sample", "display_path", "is_image_path", "load_rgb",
           "read_manifest"]
