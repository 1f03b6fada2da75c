"""Training a model: the loop and everything that hangs on it.

``trainer``: the iteration loop with evaluation, checkpoints and exact resume; ``parts``: what
it trains with (model, batches, optimizer, schedule...) and their builders; ``hooks``: small
jobs on the loop (logging, evaluation, CPU sharing); ``schedules``: learning rates;
``sampling`` and ``prefetch``: the sample order and batches prepared in the background;
``freezing`` and ``bn_statistics``: frozen backbone parts and recomputed BatchNorm statistics;
``rng_state``: random states for exact resume; ``metrics_log`` and ``progress``: where records go
and what a run shows while it runs.
"""
