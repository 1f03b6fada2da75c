"""What ``leanseg bench`` and every benchmark script report: size, FLOPs, memory and latency.

``flops``: parameter elements and fused multiply-adds of a forward, with the extension point for
layers that report their own cost; ``memory``: bytes saved for backward by a training forward and
peak memory of a call (CUDA allocator or process RSS), with the heap and RSS helpers behind it;
``latency``: median wall time of repeated calls and its spread; ``machine``: the description of
where a figure was measured; ``benchmark``: all of it for one model at one input size
(:func:`~leanseg.profiling.benchmark.benchmark_model`), as ``leanseg bench`` prints and saves it;
``state``: putting a model's flags and buffers back, and waiting for queued CUDA work, after a
measurement. Each module states the convention its figures follow, so that all are comparable.
"""
