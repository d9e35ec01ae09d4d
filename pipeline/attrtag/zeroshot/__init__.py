"""Zero-shot classes from attribute rules: rules, the compiled class scorer, record fields, evaluation.

Torch-free; depends only on the schema. See ``datasets/RULES.md`` for the rules syntax and the
scoring maths.
"""
from .classifier import EPS, ClassScorer, ZeroShotResult, apply_overrides, score_classes
from .fields import CLASS_FIELDS, UNKNOWN, ClassTagging
from .rules import Constraint, Rule, Rules, lint

__all__ = [
    "CLASS_FIELDS", "EPS", "UNKNOWN", "ClassScorer", "ClassTagging", "Constraint", "Rule", "Rules",
    "ZeroShotResult", "apply_overrides", "lint", "score_classes",
]
