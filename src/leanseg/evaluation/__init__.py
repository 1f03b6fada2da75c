"""Scoring a model on a dataset: the one code path ``leanseg train`` and ``leanseg eval`` share.

``evaluator``: :func:`~leanseg.evaluation.evaluator.evaluate`, which runs the model once per
batch and feeds a list of evaluators, and the default list; ``base``: the evaluator protocol and
the prediction each one sees; one evaluator per kind of score: ``semantic`` (mIoU, accuracies,
category IoU, boundary mIoU), ``extra_scores`` (iIoU, foreign-class incidence), ``instances``
(instance AP for heads that predict instances), ``cost`` (active sites of heads that report
them); ``domains``: per-dataset scores of a multi-dataset model; ``ood``: in-domain versus
out-of-distribution images.
"""
