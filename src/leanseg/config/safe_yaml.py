"""Reading YAML that a user hands over: plain values only, and within bounds.

Every YAML text leanseg reads (config files, ``--set`` values, a run's ``config.yaml``) goes
through :func:`load`. On top of PyYAML's safe loader (no Python objects, no code) it refuses:

- a mapping that names a key twice (PyYAML keeps the last value silently); a merge key
  (``<<: *defaults``) may still be overridden by the keys written beside it;
- nesting deeper than :data:`MAX_DEPTH` levels, before the composer's recursion runs out of
  stack;
- a document whose aliases would expand to more than :data:`MAX_EXPANDED_NODES` nodes (the
  "billion laughs": ten lines of anchors that expand to 10^9 values), and an alias that refers
  to a node it sits in (a recursive structure). Counting is done on the composed node graph,
  where an alias is the anchored node itself, so it takes time linear in the text;
- (:func:`load_file`) a file larger than :data:`MAX_FILE_BYTES`, before it is read.

Errors are :class:`yaml.YAMLError` subclasses carrying the line and column, so callers that
already turn a YAML syntax error into a one-line message handle these too.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.error import MarkedYAMLError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

# A config of this project is a few kilobytes; the largest shipped one is under 4 KiB.
MAX_FILE_BYTES = 1 << 20
# Configs nest four or five levels (data.datasets[0].options.size); 64 leaves room for any
# hand-written structure while staying far from Python's recursion limit.
MAX_DEPTH = 64
# Values in the document once every alias is expanded. A config has a few hundred.
MAX_EXPANDED_NODES = 100_000

_MERGE_TAG = "tag:yaml.org,2002:merge"


class YAMLLimitError(MarkedYAMLError):
    """A document over one of this module's limits (depth, alias expansion, recursion)."""


class DuplicateKeyError(ConstructorError):
    """A mapping that names the same key twice."""


class StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses duplicate keys, deep nesting and alias bombs."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        """Compose one node, refusing nesting deeper than :data:`MAX_DEPTH`."""
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise YAMLLimitError(
                    problem=f"nested deeper than {MAX_DEPTH} levels",
                    problem_mark=self.peek_event().start_mark,
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_document(self) -> Node:
        """Compose the document, then count what its aliases expand to before construction."""
        node = super().compose_document()
        _check_expansion(node)
        return node

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        """The mapping of ``node``, refusing a key written twice (merge keys excepted)."""
        if isinstance(node, MappingNode):
            seen: dict[Any, Node] = {}
            for key_node, _ in node.value:
                if key_node.tag == _MERGE_TAG or not isinstance(key_node, ScalarNode):
                    continue  # merges may be overridden; unhashable keys fail in PyYAML
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node)
                except TypeError:
                    continue
                if first is not key_node:
                    raise DuplicateKeyError(
                        "while reading a mapping",
                        node.start_mark,
                        f"duplicate key {key!r} (first at line {first.start_mark.line + 1}); "
                        "a key may appear once in a mapping",
                        key_node.start_mark,
                    )
        return super().construct_mapping(node, deep=deep)


def _check_expansion(root: Node | None) -> None:
    """Raise :class:`YAMLLimitError` when the expanded document would be too large or cyclic."""
    if root is None:
        return
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    # Iterative post-order walk: deep documents were already refused, but an alias chain may
    # still link many nodes.
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            on_path.discard(key)
            sizes[key] = 1 + sum(sizes[id(child)] for child in _children(node))
            if sizes[key] > MAX_EXPANDED_NODES:
                raise YAMLLimitError(
                    problem=f"aliases expand to more than {MAX_EXPANDED_NODES} values (an alias "
                    "bomb?); write the values out or use fewer aliases",
                    problem_mark=node.start_mark,
                )
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise YAMLLimitError(
                problem="an alias refers to a node that contains it (a recursive structure)",
                problem_mark=node.start_mark,
            )
        on_path.add(key)
        stack.append((node, True))
        for child in _children(node):
            if id(child) in on_path:
                raise YAMLLimitError(
                    problem="an alias refers to a node that contains it (a recursive structure)",
                    problem_mark=child.start_mark,
                )
            if id(child) not in sizes:
                stack.append((child, False))


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def load(text: str) -> Any:
    """The value of one YAML document, read with :class:`StrictLoader`.

    Raises:
        yaml.YAMLError: a syntax error, a duplicate key, or a document over the limits.
    """
    loader = StrictLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


class YAMLFileTooLarge(ValueError):
    """A YAML file over :data:`MAX_FILE_BYTES`."""


def check_file_size(path: str | Path) -> None:
    """Refuse a file larger than :data:`MAX_FILE_BYTES` before reading it.

    Raises:
        YAMLFileTooLarge: naming the file, its size and the limit.
    """
    size = os.stat(path).st_size
    if size > MAX_FILE_BYTES:
        raise YAMLFileTooLarge(
            f"{path}: {size} bytes, more than a config may hold ({MAX_FILE_BYTES} bytes); "
            "is it the right file?"
        )


def load_file(path: str | Path) -> Any:
    """:func:`load` of the UTF-8 file ``path``, refused above :data:`MAX_FILE_BYTES`.

    Raises:
        YAMLFileTooLarge: the file is too large.
        yaml.YAMLError: as :func:`load`.
        OSError, UnicodeDecodeError: the file cannot be read as UTF-8 text.
    """
    check_file_size(path)
    return load(Path(path).read_text(encoding="utf-8"))
