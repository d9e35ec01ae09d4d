"""The label audit: which of a manifest's given labels are likely wrong, per group (issue 21).

:mod:`.folds` trains K times, each training holding one fold out, and :mod:`.dynamics` records
what each training saw; :mod:`.scores` turns probabilities into a score per label (pure numpy),
:mod:`.labels` applies it to every given label (never to an unknown one), :mod:`.run` ties them
together, and :mod:`.output` writes and reads the audit file (``datasets/AUDIT.md``).
``attrtag audit`` and :func:`attrtag.audit` are the ways in. Nothing is imported here, so the
review commands can read an audit file without torch.
"""
