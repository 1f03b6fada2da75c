"""Scoring a model on a dataset: the one code path ``leanseg train`` and ``leanseg eval`` share.

``evaluator``: the evaluation loop and its semantic scores; ``extra_scores``: category IoU, iIoU
and foreign-class incidence; ``instances``: instance AP for heads that predict instances;
``domains``: per-dataset scores of a multi-dataset model; ``ood``: in-domain versus
out-of-distribution images.
"""
