"""Help texts speak to users: no references to the project's issues or internal notes."""

from __future__ import annotations

import argparse
import re

import pytest

from leanseg.cli import build_parser
from leanseg.config import TrainConfig, load_config

INTERNAL = re.compile(r"issue[ -]?\d+|docs/notes", re.IGNORECASE)


def all_parsers(
    parser: argparse.ArgumentParser, name: str = "leanseg"
) -> list[tuple[str, argparse.ArgumentParser]]:
    """``parser`` and every subcommand's parser below it, with their command lines."""
    found = [(name, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command, sub in action.choices.items():
                found += all_parsers(sub, f"{name} {command}")
    return found


PARSERS = all_parsers(build_parser())


def test_every_subcommand_is_walked():
    names = {name for name, _ in PARSERS}
    assert {"leanseg train", "leanseg eval", "leanseg predict", "leanseg data weights"} <= names


@pytest.mark.parametrize("name, parser", PARSERS, ids=[name for name, _ in PARSERS])
def test_help_has_no_internal_references(name, parser):
    text = parser.format_help()
    assert not INTERNAL.search(text), f"{name} --help: {INTERNAL.search(text).group(0)!r}"


def test_training_defaults_are_the_recipe():
    """A config that leaves out train: trains as configs/lite0/ladder_camvid.yaml does."""
    recipe = load_config("lite0/ladder_camvid").train
    defaults = TrainConfig()
    for key in ("optimizer", "lr", "weight_decay", "backbone_lr_mult", "schedule", "warmup_iters"):
        assert getattr(defaults, key) == getattr(recipe, key), key
