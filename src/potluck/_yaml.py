"""YAML as potluck reads it: PyYAML's safe loader, but a key may appear once in a mapping.

PyYAML keeps the last of two equal keys in one mapping and says nothing, so a setting or a
definition field written twice silently loses its first value. :class:`UniqueKeyLoader` refuses
that with :class:`DuplicateKeyError`, which marks the second key and remembers the first. Keys
that a merge (``<<: *base``) brings in may still be overridden: that is what a merge is for.
Both readers of YAML use it: the config file (``potluck.config``), its environment variables'
values, and definitions files (``potluck.definitions.loader``).

It also refuses collections nested more than :data:`MAX_DEPTH` levels deep with
:class:`TooDeepError` (marking where the limit is passed), counting the levels an alias brings
in, so that nothing recursive that reads the result (PyYAML itself, a ``repr`` in a message,
validation) can run out of Python's stack: ``entities: [[[[...]]]]`` 5,000 levels deep would
otherwise end in a ``RecursionError``.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.error import MarkedYAMLError

_MERGE_TAG = "tag:yaml.org,2002:merge"

MAX_DEPTH = 100
"""The most levels of collections (lists and mappings) one YAML document may nest."""

_COLLECTION_STARTS = (yaml.SequenceStartEvent, yaml.MappingStartEvent)


class DuplicateKeyError(ConstructorError):
    """A mapping holds the same key twice.

    Attributes:
        key: The key, as YAML reads it (``'project'``, ``1``).
        line: The 1-based line of the second occurrence (also ``problem_mark``).
        first_line: The 1-based line of the first occurrence.
    """

    def __init__(self, key: Any, first: yaml.Node, second: yaml.Node) -> None:
        self.key = key
        self.line = int(second.start_mark.line) + 1
        self.first_line = int(first.start_mark.line) + 1
        super().__init__(
            problem=f"duplicate key {key!r} (first at line {self.first_line}); keep one of them",
            problem_mark=second.start_mark,
        )


class TooDeepError(MarkedYAMLError):
    """Collections nest more than :data:`MAX_DEPTH` levels deep.

    Attributes:
        line: The 1-based line of the collection that passes the limit (also ``problem_mark``).
    """

    def __init__(self, mark: Any) -> None:
        self.line = int(mark.line) + 1 if mark is not None else 1
        super().__init__(
            problem=f"nested too deeply (more than {MAX_DEPTH} levels)", problem_mark=mark
        )


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [child for pair in node.value for child in pair]
    return list(node.value) if isinstance(node, yaml.SequenceNode) else []


class UniqueKeyLoader(yaml.SafeLoader):
    """A ``yaml.SafeLoader`` that refuses repeated keys and collections nested too deeply.

    It raises :class:`DuplicateKeyError` for a repeated key and :class:`TooDeepError` for
    collections nested more than :data:`MAX_DEPTH` levels deep.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._open = 0
        self._levels: dict[int, int] = {}  # id(collection node) -> levels it holds, aliases in

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        """Compose the next node, refusing collections nested too deeply.

        Raises:
            TooDeepError: On the way down, at the collection that opens level
                ``MAX_DEPTH + 1`` (before Python's stack runs out); on the way up, at a
                collection whose aliases bring in more levels than that.
        """
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if not isinstance(event, _COLLECTION_STARTS):
            return super().compose_node(parent, index)
        if self._open >= MAX_DEPTH:
            raise TooDeepError(event.start_mark)
        self._open += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self._open -= 1
        if node is None:
            return None
        levels = 1 + max((self._levels.get(id(c), 0) for c in _children(node)), default=0)
        if levels > MAX_DEPTH:
            raise TooDeepError(node.start_mark)
        self._levels[id(node)] = levels
        return node

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        """Construct ``node`` as a dict after checking that no key of its own is repeated.

        Raises:
            DuplicateKeyError: If two of the mapping's own keys are equal.
        """
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, yaml.Node] = {}
            for key_node, _ in node.value:
                if key_node.tag == _MERGE_TAG:
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: the base class says so
                    continue
                if first is not None:
                    raise DuplicateKeyError(key, first, key_node)
                seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


def load(text: str) -> Any:
    """Read one YAML document, refusing repeated keys.

    Raises:
        DuplicateKeyError: If a mapping holds a key twice.
        TooDeepError: If collections nest more than :data:`MAX_DEPTH` levels deep.
        yaml.YAMLError: If ``text`` is not valid YAML.
    """
    return yaml.load(text, Loader=UniqueKeyLoader)


__all__ = ["MAX_DEPTH", "DuplicateKeyError", "TooDeepError", "UniqueKeyLoader", "load"]
