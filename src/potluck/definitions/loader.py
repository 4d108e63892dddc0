"""Load definitions from a file: YAML in serde's dict form, or a Python module of objects.

A YAML file has two optional top-level keys, ``entities:`` and ``feature_tables:``, each a list of
definitions in the dict form :mod:`potluck.definitions.serde` reads. A Python file is executed and
every :class:`Entity` and :class:`FeatureTable` bound at its module level is collected, in
definition order. Every error is a :class:`DefinitionError` whose message starts with the file
(and the line, where one is known).
"""

from __future__ import annotations

import runpy
import sys
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from potluck.definitions.entity import Entity
from potluck.definitions.feature_table import FeatureTable
from potluck.definitions.serde import Definition, entity_from_dict, feature_table_from_dict, kind_of
from potluck.errors import DefinitionError

YAML_SUFFIXES = (".yaml", ".yml")
PYTHON_SUFFIXES = (".py",)
_BUILDERS: dict[str, Callable[[Mapping[str, Any]], Definition]] = {
    "entities": entity_from_dict,
    "feature_tables": feature_table_from_dict,
}


def load_definitions(path: str | Path) -> list[Definition]:
    """Read the entities and feature tables defined in ``path``.

    Args:
        path: A ``.yaml``/``.yml`` file in serde's dict form or a ``.py`` file of objects.

    Returns:
        The definitions in file order; an object bound to several names appears once.

    Raises:
        DefinitionError: If the file is missing, of an unknown kind, malformed (the message names
            the file and line), raises when executed, defines nothing, or defines two different
            objects of one kind under one name.
    """
    file = Path(path)
    if file.suffix in YAML_SUFFIXES:
        text = _read(file)
        found = _from_yaml(file, text)
    elif file.suffix in PYTHON_SUFFIXES:
        _read(file)
        found = _from_python(file)
    else:
        kinds = ", ".join(YAML_SUFFIXES + PYTHON_SUFFIXES)
        raise DefinitionError(
            f"{file}: unknown kind of definitions file; use one of {kinds}",
            field="file",
            file=str(file),
        )
    if not found:
        raise DefinitionError(
            f"{file}: defines no entities or feature tables", field="file", file=str(file)
        )
    return _unique(file, found)


def _read(file: Path) -> str:
    try:
        return file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DefinitionError(f"{file}: no such file", field="file", file=str(file)) from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else str(exc)
        raise DefinitionError(
            f"{file}: cannot read: {reason}", field="file", file=str(file)
        ) from None


def _from_yaml(file: Path, text: str) -> list[Definition]:
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"{file}, line {mark.line + 1}" if mark is not None else str(file)
        problem = getattr(exc, "problem", None) or str(exc)
        raise DefinitionError(
            f"{where}: malformed YAML: {problem}",
            field="file",
            file=str(file),
            line=None if mark is None else mark.line + 1,
        ) from None
    finally:
        loader.dispose()
    if data is None:
        return []
    if not isinstance(data, dict) or not isinstance(root, yaml.MappingNode):
        raise DefinitionError(
            f"{file}, line 1: expected a mapping with the keys entities and feature_tables",
            field="file",
            file=str(file),
            line=1,
        )
    item_nodes = {
        key.value: value for key, value in root.value if isinstance(key, yaml.ScalarNode)
    }
    found: list[Definition] = []
    for key, items in data.items():
        node = item_nodes.get(key)
        line = _line(node) if node is not None else 1
        if key not in _BUILDERS:
            raise DefinitionError(
                f"{file}, line {line}: unknown key {key!r}; a definitions file has the keys "
                "entities and feature_tables",
                field="file",
                file=str(file),
                line=line,
            )
        if items is None:
            continue
        if not isinstance(items, list) or not isinstance(node, yaml.SequenceNode):
            raise DefinitionError(
                f"{file}, line {line}: {key} must be a list",
                field=key,
                file=str(file),
                line=line,
            )
        for item, item_node in zip(items, node.value, strict=True):
            found.append(_build(file, _line(item_node), _BUILDERS[key], item))
    return found


def _build(
    file: Path, line: int, builder: Callable[[Mapping[str, Any]], Definition], item: Any
) -> Definition:
    try:
        return builder(item)
    except DefinitionError as exc:
        raise _located(exc, file, line) from None


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def _from_python(file: Path) -> list[Definition]:
    # Like `python FILE`: the file's folder is importable while it runs, so it can import
    # its neighbours.
    folder = str(file.resolve().parent)
    sys.path.insert(0, folder)
    try:
        namespace = runpy.run_path(str(file), run_name="__potluck_definitions__")
    except SyntaxError as exc:
        raise DefinitionError(
            f"{file}, line {exc.lineno or 1}: SyntaxError: {exc.msg}",
            field="file",
            file=str(file),
            line=exc.lineno or 1,
        ) from None
    except DefinitionError as exc:
        raise _located(exc, file, _raising_line(file, exc)) from None
    except (Exception, SystemExit) as exc:
        raising_line = _raising_line(file, exc)
        where = f"{file}, line {raising_line}" if raising_line else str(file)
        raise DefinitionError(
            f"{where}: raised {type(exc).__name__}: {exc}",
            field="file",
            file=str(file),
            line=raising_line,
        ) from None
    finally:
        sys.path.remove(folder)
    return [
        value
        for name, value in namespace.items()
        if not name.startswith("__") and isinstance(value, (Entity, FeatureTable))
    ]


def _raising_line(file: Path, exc: BaseException) -> int | None:
    """Return the line of ``file`` that the exception passed through last, if any."""
    target = str(file.resolve())
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if str(Path(frame.filename).resolve()) == target:
            line = frame.lineno
    return line


def _located(exc: DefinitionError, file: Path, line: int | None) -> DefinitionError:
    where = f"{file}, line {line}" if line else str(file)
    attrs = {k: v for k, v in exc.attrs().items() if k not in {"file", "line"}}
    return DefinitionError(f"{where}: {exc.message}", file=str(file), line=line, **attrs)


def _unique(file: Path, found: list[Definition]) -> list[Definition]:
    by_key: dict[tuple[str, str], Definition] = {}
    unique: list[Definition] = []
    for obj in found:
        key = (kind_of(obj), obj.name)
        seen = by_key.get(key)
        if seen is None:
            by_key[key] = obj
            unique.append(obj)
        elif seen != obj:
            raise DefinitionError(
                f"{file}: {key[0].replace('_', ' ')} {obj.name!r} is defined twice, "
                "differently",
                field=f"{key[0]}.name",
                file=str(file),
            )
    return unique


__all__ = ["PYTHON_SUFFIXES", "YAML_SUFFIXES", "load_definitions"]
