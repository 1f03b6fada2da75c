"""Running a trained model on images: what ``leanseg predict`` and every evaluation call.

``loading``: a trained model from a run folder or checkpoint; ``predictor``: sliding windows,
multi-scale and flip testing and the :class:`~leanseg.inference.predictor.Predictor`; ``speed``:
BN folding, channels-last, autocast, ``torch.compile`` and the ONNX Runtime backend;
``model_inputs``: the inputs besides the image (e.g. disparity) and how they follow it;
``dense_crf``: CRF post-processing; ``site_cost``: the data-dependent cost of heads that report
it; ``scale_levels`` and ``ood_maps``: the extra maps ``predict`` can write.
"""
