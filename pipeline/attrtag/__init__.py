"""attrtag: grouped-softmax attribute models for partially labelled images.

Importing the package is cheap and does not import torch: the ONNX tagging path runs without it.
"""
from .errors import AttrtagError
from .schema import Group, Schema

__version__ = "0.1.0"
__all__ = ["AttrtagError", "Group", "Schema", "__version__"]
