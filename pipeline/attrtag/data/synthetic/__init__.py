"""The synthetic demo world (used by ``attrtag demo`` and fast tests): see :mod:`.world`."""
from .draw import SAFE_FRACTION, render
from .world import (
    CREATURE_GROUPS,
    LOGO_GROUPS,
    RULES_FILE,
    SCHEMA_FILE,
    SPLIT_FRACTIONS,
    STICKER_RATE,
    STICKERS,
    UNSEEN,
    demo_classes,
    demo_schema,
    generate,
)

__all__ = [
    "CREATURE_GROUPS", "LOGO_GROUPS", "RULES_FILE", "SAFE_FRACTION", "SCHEMA_FILE", "SPLIT_FRACTIONS", "STICKERS",
    "STICKER_RATE", "UNSEEN",
    "demo_classes", "demo_schema", "generate", "render",
]
