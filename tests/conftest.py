"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tiny_models import save_tiny_ladder_checkpoint


def shared_data_dir() -> Path:
    """The real test data in the repository's sibling ``shared/data`` folder.

    Skips the calling test when the folder is missing, or fails it on CI (``CI=true``), where
    the data must be present.
    """
    path = Path(__file__).resolve().parents[2] / "shared" / "data"
    if not path.is_dir():
        message = f"shared test data not found at {path}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture
def shared_data() -> Path:
    """Path of ``../shared/data`` (see :func:`shared_data_dir`)."""
    return shared_data_dir()


@pytest.fixture
def shared_reference() -> Path:
    """Path of ``../shared/reference`` (torchvision / HRNet state-dict manifests)."""
    return shared_data_dir().parent / "reference"


@pytest.fixture(scope="session")
def tiny_ladder_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint of a random ResNet-18 ladder on synthetic scenes (``tiny_models``)."""
    return save_tiny_ladder_checkpoint(tmp_path_factory.mktemp("tiny_ladder_run"))
