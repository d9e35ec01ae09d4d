"""How sure the model is of a tagged record: one scale for exclusive groups and multi-label values.

Review puts the doubtful images first (Label Studio's task score, the report's "least sure
first"), so both kinds of group must be comparable:

* an exclusive group is as sure as its top probability (``<group>_prob``), as before;
* a multi-label value is a yes/no decision taken at its threshold ``t``. Its sureness is how far
  its probability ``p`` lies from ``t``, as a fraction of the way to certainty (``1 - t`` when
  present, ``t`` when absent), mapped onto ``[0.5, 1]``, the range of a two-value exclusive
  group's top probability. At ``t = 0.5`` this is ``max(p, 1 - p)``, the probability of the
  decision taken, so a yes/no tag ranks like a two-value exclusive group; a value right on its
  threshold scores 0.5 whatever ``t`` is. The raw distance ``|p - t|`` would not do: 0.95 at
  ``t = 0.9`` and 0.55 at ``t = 0.5`` are both 0.05 away, but the first is half way to certainty.

A multi-label group is as sure as its least sure value. The report's page computes the same in
JavaScript (``templates/report.html.j2``, ``valueSureness``); the browser test holds them equal.
"""
from __future__ import annotations

from ..schema import Group
from ..tagging.records import RecordLayout, TagRecord


def decision_sureness(p: float, threshold: float, present: bool) -> float:
    """Sureness of one multi-label value in ``[0.5, 1]`` (0.5: on its threshold; 1: p is 0 or 1)."""
    span = (1.0 - threshold) if present else threshold
    if span <= 0.0:
        return 1.0  # t = 1 and present (p = 1), or t = 0 and absent: nothing left to doubt
    return 0.5 + 0.5 * min(1.0, abs(p - threshold) / span)


def value_sureness(layout: RecordLayout, record: TagRecord, group: Group) -> dict[str, float]:
    """Each value of multi-label ``group`` that has a probability in ``record`` -> its sureness.

    Values left out of ``<group>_probs`` by ``top_k`` have no probability and are left out here.
    """
    probs, present = record[f"{group.name}_probs"], set(record[group.name])
    return {v: decision_sureness(float(probs[v]), layout.decision_threshold(group.name, i), v in present)
            for i, v in enumerate(group.values) if v in probs}


def group_sureness(layout: RecordLayout, record: TagRecord, group: Group) -> float:
    """Top probability of an exclusive group; the least sure value of a multi-label one."""
    if not group.multi:
        return float(record[f"{group.name}_prob"])
    return min(value_sureness(layout, record, group).values(), default=1.0)


def least_sure(layout: RecordLayout, record: TagRecord) -> tuple[str, float]:
    """The group the model is least sure of in a tagged record, and that sureness (first on ties)."""
    return min(((g.name, group_sureness(layout, record, g)) for g in layout.schema), key=lambda gs: gs[1])
