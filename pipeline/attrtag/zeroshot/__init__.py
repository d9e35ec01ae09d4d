"""Zero-shot classes from attribute rules: rules, the compiled class scorer, a run's scoring, evaluation.

Torch-free; depends only on the schema. See ``datasets/RULES.md`` for the rules syntax and the
scoring maths.
"""
from .classifier import EPS, ClassScorer, ZeroShotResult, apply_overrides, score_classes
from .rules import Constraint, Rule, Rules, lint
from .scoring import DEFAULT_CLASS_TOP_K, ClassScoring, class_scoring

__all__ = [
    "DEFAULT_CLASS_TOP_K", "EPS", "ClassScorer", "ClassScoring", "Constraint", "Rule", "Rules", "ZeroShotResult",
    "apply_overrides", "class_scoring", "lint", "score_classes",
]
