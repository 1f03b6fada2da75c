"""Scores computed from predictions and labels, with no model in sight.

``semantic``: confusion matrices, mIoU, accuracies and boundary mIoU; ``instance``: Cityscapes-style
AP of instance masks; ``ood``: the foreign-class out-of-distribution flag and its AUROC. Nothing
here imports torch modules or reads files, so each definition can be tested on small arrays.
"""
