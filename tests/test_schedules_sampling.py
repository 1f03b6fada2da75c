"""Learning-rate schedules and the resumable sample order."""

import itertools
import math

import pytest

from leanseg.config import TrainConfig
from leanseg.training.sampling import ResumableSampler
from leanseg.training.schedules import learning_rate


def test_poly_schedule():
    cfg = TrainConfig(lr=0.1, schedule="poly", max_iters=100, poly_power=0.9, warmup_iters=0)
    assert learning_rate(0, cfg) == pytest.approx(0.1)
    assert learning_rate(50, cfg) == pytest.approx(0.1 * 0.5**0.9)
    assert learning_rate(100, cfg) == pytest.approx(0.0)
    floored = TrainConfig(
        lr=0.1, min_lr=0.01, schedule="poly", max_iters=100, poly_power=0.9, warmup_iters=0
    )
    assert learning_rate(50, floored) == pytest.approx(0.01 + 0.09 * 0.5**0.9)
    assert learning_rate(100, floored) == pytest.approx(0.01)  # decays to min_lr, not 0


def test_cosine_schedule_is_thesis_eq_4_1():
    cfg = TrainConfig(lr=4e-4, min_lr=1e-7, schedule="cosine", max_iters=300, warmup_iters=0)
    for i in (0, 75, 150, 299):
        expected = 1e-7 + (4e-4 - 1e-7) / 2 * (1 + math.cos(i / 300 * math.pi))
        assert learning_rate(i, cfg) == pytest.approx(expected)


def test_warmup_ramps_linearly():
    cfg = TrainConfig(lr=1.0, schedule="constant", warmup_iters=10, warmup_ratio=0.1)
    assert learning_rate(0, cfg) == pytest.approx(0.1)
    assert learning_rate(5, cfg) == pytest.approx(0.55)
    assert learning_rate(10, cfg) == pytest.approx(1.0)


def take(sampler, count):
    return list(itertools.islice(iter(sampler), count))


def test_sampler_is_seeded_and_covers_each_epoch():
    first = take(ResumableSampler(10, seed=3), 30)
    assert first == take(ResumableSampler(10, seed=3), 30)
    assert first != take(ResumableSampler(10, seed=4), 30)
    for epoch in range(3):
        assert sorted(i for i, _ in first[epoch * 10 : (epoch + 1) * 10]) == list(range(10))
    assert len({seed for _, seed in first}) == 30


def test_sampler_resumes_mid_stream():
    full = take(ResumableSampler(7, seed=1), 40)
    assert take(ResumableSampler(7, seed=1, start=13), 27) == full[13:]


def test_ranks_split_the_stream():
    full = take(ResumableSampler(8, seed=2), 16)
    rank0 = take(ResumableSampler(8, seed=2, rank=0, world_size=2), 8)
    rank1 = take(ResumableSampler(8, seed=2, rank=1, world_size=2), 8)
    assert rank0 == full[0::2] and rank1 == full[1::2]
