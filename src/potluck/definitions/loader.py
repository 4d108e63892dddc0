"""Load definitions from files: YAML in serde's dict form, or Python modules of objects.

A YAML file has two optional top-level keys, ``entities:`` and ``feature_tables:``, each a list of
definitions in the dict form :mod:`potluck.definitions.serde` reads. A Python file is executed and
every :class:`Entity` and :class:`FeatureTable` bound at its module level is collected, in
definition order; what it prints goes to stderr, so a command's stdout stays its own.

:func:`load_paths` reads several files and folders at once (every ``*.yaml``, ``*.yml`` and
``*.py`` of a folder) and remembers where each definition came from, so later errors can name
the file and line. Every error is a :class:`DefinitionError` whose message starts with the file
and, where one is known, the line of the offending key: ``defs.yaml, line 6: ...``.

A Python file runs in a child process (:mod:`potluck.definitions._child`), so a file that ends
the process while it is loaded (``sys.exit()``, ``os._exit()``, a signal it sends itself) is
an error naming it (``ended the process while being loaded``), never a command that ends with
the file's exit status. Only the definitions it binds come back; what it imports stays in the
child.
"""

from __future__ import annotations

import ast
import contextlib
import copy
import runpy
import sys
import traceback
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from potluck._yaml import DuplicateKeyError, TooDeepError, UniqueKeyLoader
from potluck.definitions._child import ProcessEnded, run_in_child
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
_ANY = -1
"""A step of a field path: some element of a list, found by :func:`_failing_element`."""


@dataclass(frozen=True)
class Origin:
    """Where a definition was read: its file, its line, and its node there to find keys in.

    Attributes:
        file: The file, as it was named (relative paths stay relative).
        line: Its 1-based line (the YAML item, or the Python statement binding it); ``None``
            when unknown.
    """

    file: Path
    line: int | None
    node: yaml.Node | ast.AST | None = field(default=None, compare=False, repr=False)

    def where(self, line: int | None = None) -> str:
        """Return ``FILE, line N`` for ``line`` (default: the definition's own line)."""
        line = self.line if line is None else line
        return f"{self.file}, line {line}" if line else str(self.file)

    def line_of(self, key: str, value: object = None) -> int | None:
        """Return the line of ``key`` in the definition, or of its element equal to ``value``.

        For ``key="entities", value="driver_id"`` that is the line naming that entity in the
        table's ``entities`` list. Falls back to the key's line, then the definition's.
        """
        if isinstance(self.node, yaml.Node):
            found = _yaml_key(self.node, key)
            if found is None:
                return self.line
            key_line, child = found
            if value is not None and isinstance(child, yaml.SequenceNode):
                for item in child.value:
                    if isinstance(item, yaml.ScalarNode) and item.value == value:
                        return _line(item)
            return key_line
        if isinstance(self.node, ast.Call):
            keyword = _keyword(self.node, key)
            if keyword is None:
                return self.line
            if value is not None and isinstance(keyword.value, (ast.List, ast.Tuple)):
                for element in keyword.value.elts:
                    if isinstance(element, ast.Constant) and element.value == value:
                        return element.lineno
            return keyword.lineno
        return self.line


@dataclass(frozen=True)
class LoadedDefinitions:
    """Definitions read from files, each once, with where each was read.

    Attributes:
        definitions: In file order, then order within each file; an object defined identically
            in several places appears once.
        origins: ``(kind, name)`` -> where it was first defined.
    """

    definitions: list[Definition]
    origins: dict[tuple[str, str], Origin]

    def locate(self, error: DefinitionError) -> DefinitionError:
        """Return ``error`` with the file and line it is about, when it names a table read here.

        The registry reports a table's unknown entity with ``table`` and ``entity`` attributes
        but knows no files; this adds ``FILE, line N:`` (the line naming the entity) in front.
        Other errors are returned as they are.
        """
        attrs = error.attrs()
        table = attrs.get("table")
        origin = self.origins.get(("feature_table", table)) if isinstance(table, str) else None
        if origin is None or attrs.get("file") is not None:
            return error
        line = origin.line_of("entities", attrs.get("entity"))
        return _located(error, origin.file, line)


def load_definitions(path: str | Path) -> list[Definition]:
    """Read the entities and feature tables defined in one file.

    Args:
        path: A ``.yaml``/``.yml`` file in serde's dict form or a ``.py`` file of objects.

    Returns:
        The definitions in file order; an object bound to several names appears once.

    Raises:
        DefinitionError: If the file is missing, of an unknown kind, malformed (the message names
            the file and line), raises when executed, defines nothing, or defines two different
            objects of one kind under one name.
    """
    return load_paths([path]).definitions


def load_paths(paths: Sequence[str | Path], *, skip: Collection[str] = ()) -> LoadedDefinitions:
    """Read the definitions of several files and folders, as one set.

    Args:
        paths: Files (``.yaml``, ``.yml``, ``.py``) and folders; a folder stands for its
            definitions files (not its subfolders), in name order, leaving out hidden files and
            files named in ``skip``. A file named itself must define something; a file found in
            a folder may define nothing (a helper module), as long as the folder defines
            something.
        skip: File names never read from a folder (the CLI passes ``potluck.yaml``).

    Returns:
        The definitions in order, each once, and where each was read.

    Raises:
        DefinitionError: If a path does not exist, a file is malformed or invalid (naming the file
            and the line of the offending key), nothing is defined, or one kind of object is
            defined twice under one name with different attributes (naming both places).
    """
    found: list[tuple[Definition, Origin]] = []
    for path in (Path(p) for p in paths):
        if path.is_dir():
            files = _definition_files(path, skip)
            before = len(found)
            for file in files:
                found.extend(_load_file(file))
            if len(found) == before:
                kinds = ", ".join(f"*{s}" for s in YAML_SUFFIXES + PYTHON_SUFFIXES)
                what = "defines no entities or feature tables" if files else f"holds no {kinds}"
                raise DefinitionError(f"{path}: {what}", field="file", file=str(path))
            continue
        loaded = _load_file(path)
        if not loaded:
            raise DefinitionError(
                f"{path}: defines no entities or feature tables", field="file", file=str(path)
            )
        found.extend(loaded)
    return _unique(found)


def _definition_files(folder: Path, skip: Collection[str]) -> list[Path]:
    suffixes = YAML_SUFFIXES + PYTHON_SUFFIXES
    return sorted(
        p
        for p in folder.iterdir()
        if p.suffix in suffixes
        and not p.name.startswith(".")
        and p.name not in skip
        and p.is_file()
    )


def _load_file(file: Path) -> list[tuple[Definition, Origin]]:
    if file.suffix in YAML_SUFFIXES:
        return _from_yaml(file, _read(file))
    if file.suffix in PYTHON_SUFFIXES:
        return _from_python(file, _read(file))
    if not file.exists():
        raise DefinitionError(f"{file}: no such file or folder", field="file", file=str(file))
    kinds = ", ".join(YAML_SUFFIXES + PYTHON_SUFFIXES)
    raise DefinitionError(
        f"{file}: unknown kind of definitions file; use one of {kinds}",
        field="file",
        file=str(file),
    )


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


# ---- YAML --------------------------------------------------------------------------------------


def _from_yaml(file: Path, text: str) -> list[tuple[Definition, Origin]]:
    loader = UniqueKeyLoader(text)
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    except DuplicateKeyError as exc:
        raise DefinitionError(
            f"{file}, line {exc.line}: duplicate key {exc.key!r} (first at line "
            f"{exc.first_line}); a key may be given once in a mapping, keep one of them",
            field="file",
            file=str(file),
            line=exc.line,
            key=str(exc.key),
        ) from None
    except TooDeepError as exc:
        raise DefinitionError(
            f"{file}, line {exc.line}: {exc.problem}",
            field="file",
            file=str(file),
            line=exc.line,
        ) from None
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
    found: list[tuple[Definition, Origin]] = []
    for key, items in data.items():
        located = _yaml_key(root, key)
        line, node = located if located is not None else (1, None)
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
            origin = Origin(file, _line(item_node), item_node)
            found.append((_build(origin, _BUILDERS[key], item), origin))
    return found


def _build(
    origin: Origin, builder: Callable[[Mapping[str, Any]], Definition], item: Any
) -> Definition:
    try:
        return builder(item)
    except DefinitionError as exc:
        line = _yaml_error_line(origin, builder, item, exc)
        raise _located(exc, origin.file, line) from None
    except RecursionError:  # text read as JSON (an Avro schema) nests beyond Python's stack
        raise DefinitionError(
            f"{origin.where()}: nested too deeply: a value of this definition (such as an Avro "
            "schema's JSON) nests deeper than can be read",
            field="file",
            file=str(origin.file),
            line=origin.line,
        ) from None


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def _yaml_key(node: yaml.Node, key: object) -> tuple[int, yaml.Node] | None:
    """Return the line of ``key`` in a mapping node and its value node, if it is there."""
    if not isinstance(node, yaml.MappingNode):
        return None
    for key_node, value_node in node.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.value == key:
            return _line(key_node), value_node
    return None


def _field_path(field_name: str) -> list[str | int]:
    """Return where a DefinitionError's ``field`` is inside a definition's dict form.

    ``feature_table.max_age`` -> ``["max_age"]``; ``batch_source.path`` ->
    ``["batch_source", "path"]``; ``feature.name`` -> ``["features", _ANY, "name"]``;
    ``feature_table.entities`` -> ``["entities", _ANY]``.
    """
    kind, _, rest = field_name.partition(".")
    keys: list[str | int] = [k for k in rest.split(".") if k]
    if kind == "feature":
        return ["features", _ANY, *keys]
    if kind in ("feature_table", "entity"):
        return [*keys, _ANY] if keys in (["features"], ["entities"]) else keys
    return [kind, *keys]


def _yaml_error_line(
    origin: Origin,
    builder: Callable[[Mapping[str, Any]], Definition],
    item: Any,
    error: DefinitionError,
) -> int | None:
    """Return the line of the key ``error`` is about, as deep in the item as it can be found."""
    node = origin.node
    line = origin.line
    for step, part in enumerate(_field_path(str(error.attrs().get("field", "")))):
        if part == _ANY:
            index = _failing_element(builder, item, error) if step == 1 else None
            if index is None or not isinstance(node, yaml.SequenceNode):
                return line
            node = node.value[index]
            line = _line(node)
            continue
        found = _yaml_key(node, part) if isinstance(node, yaml.Node) else None
        if found is None:
            return line
        line, node = found
    return line


def _failing_element(
    builder: Callable[[Mapping[str, Any]], Definition], item: Any, error: DefinitionError
) -> int | None:
    """Return the index of the list element that makes ``builder(item)`` raise ``error``.

    The list is the item's ``features`` or ``entities`` (the first step of the field's path).
    The element is the last of the shortest prefix of the list that raises the same error.
    """
    key = _field_path(str(error.attrs().get("field", "")))[0]
    elements = item.get(key) if isinstance(item, dict) else None
    if not isinstance(elements, list):
        return None
    for count in range(1, len(elements) + 1):
        trial = copy.copy(item)
        trial[key] = elements[:count]
        try:
            builder(trial)
        except DefinitionError as exc:
            if exc.message == error.message:
                return count - 1
    return None


# ---- Python ------------------------------------------------------------------------------------


def _from_python(file: Path, text: str) -> list[tuple[Definition, Origin]]:
    # The file runs in a child process (definitions/_child.py), so that a file that ends the
    # process (os._exit, a signal to itself) is reported instead of ending the command.
    try:
        defined = run_in_child(lambda: _run_python(file, text))
    except ProcessEnded as ended:
        raise _ended(file, None, ended.how) from None
    bindings = _module_bindings(text)
    return [(value, _python_origin(file, bindings.get(name))) for name, value in defined]


def _ending(exc: BaseException) -> str:
    """How a ``SystemExit`` or a ``KeyboardInterrupt`` raised in the file ended it."""
    if isinstance(exc, SystemExit):
        return f"sys.exit({exc.code!r})"
    return f"{type(exc).__name__}, raised by the file or a signal it sent itself"


def _ended(file: Path, line: int | None, how: str) -> DefinitionError:
    where = f"{file}, line {line}" if line else str(file)
    return DefinitionError(
        f"{where}: ended the process while being loaded ({how}); a definitions file must only "
        "define objects: remove what exits or signals",
        field="file",
        file=str(file),
        line=line,
    )


def _run_python(file: Path, text: str) -> list[tuple[str, Definition]]:
    """Execute ``file`` (in the child process) and return its module-level definitions by name.

    Raises:
        DefinitionError: For a syntax error, an exception the file raised, or its ending the
            process (``sys.exit()``; ``KeyboardInterrupt`` or SIGTERM's ``Terminated`` raised in
            it, while the parent was not interrupted), naming its line.
    """
    # Like `python FILE`: the file's folder is importable while it runs, so it can import
    # its neighbours. What it prints goes to stderr: stdout belongs to the command's output.
    folder = str(file.resolve().parent)
    sys.path.insert(0, folder)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            namespace = runpy.run_path(str(file), run_name="__potluck_definitions__")
    except SyntaxError as exc:
        raise DefinitionError(
            f"{file}, line {exc.lineno or 1}: SyntaxError: {exc.msg}",
            field="file",
            file=str(file),
            line=exc.lineno or 1,
        ) from None
    except DefinitionError as exc:
        raising_line = _raising_line(file, exc)
        line = _python_error_line(text, raising_line, str(exc.attrs().get("field", "")))
        raise _located(exc, file, line) from None
    except Exception as exc:
        raising_line = _raising_line(file, exc)
        where = f"{file}, line {raising_line}" if raising_line else str(file)
        raise DefinitionError(
            f"{where}: raised {type(exc).__name__}: {exc}",
            field="file",
            file=str(file),
            line=raising_line,
        ) from None
    except (SystemExit, KeyboardInterrupt) as exc:
        raise _ended(file, _raising_line(file, exc), _ending(exc)) from None
    finally:
        sys.path.remove(folder)
    return [
        (name, value)
        for name, value in namespace.items()
        if not name.startswith("__") and isinstance(value, (Entity, FeatureTable))
    ]


def _module_bindings(text: str) -> dict[str, ast.stmt]:
    """Return the module-level statement that first binds each name of a Python file."""
    bindings: dict[str, ast.stmt] = {}
    for statement in ast.parse(text).body:
        for name in _bound_names(statement):
            bindings.setdefault(name, statement)
    return bindings


def _bound_names(statement: ast.stmt) -> Iterable[str]:
    if isinstance(statement, ast.Assign):
        targets: list[ast.expr] = list(statement.targets)
    elif isinstance(statement, (ast.AnnAssign, ast.AugAssign)):
        targets = [statement.target]
    elif isinstance(statement, (ast.Import, ast.ImportFrom)):
        return [(a.asname or a.name).split(".")[0] for a in statement.names]
    else:
        return []
    return [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]


def _python_origin(file: Path, statement: ast.stmt | None) -> Origin:
    if statement is None:
        return Origin(file, None)
    value = getattr(statement, "value", None)
    return Origin(file, statement.lineno, value if isinstance(value, ast.Call) else None)


def _python_error_line(text: str, line: int | None, field_name: str) -> int | None:
    """Return the line of the keyword argument ``field_name`` names, in the call at ``line``.

    A constructor that raises is a call at ``line`` (the innermost frame in the file); when it,
    or a call around it, passes the offending key as a keyword (``max_age=...``), that
    keyword's line is the better answer.
    """
    if line is None:
        return None
    keys = [k for k in _field_path(field_name) if isinstance(k, str)]
    if not keys:
        return line
    best: ast.keyword | None = None
    for node in ast.walk(ast.parse(text)):
        if not isinstance(node, ast.Call) or not node.lineno <= line <= (node.end_lineno or 0):
            continue
        keyword = _keyword(node, keys[-1])
        if keyword is not None and (best is None or node.lineno >= best.lineno):
            best = keyword
    return line if best is None else best.lineno


def _keyword(call: ast.Call, name: str) -> ast.keyword | None:
    return next((k for k in call.keywords if k.arg == name), None)


def _raising_line(file: Path, exc: BaseException) -> int | None:
    """Return the line of ``file`` that the exception passed through last, if any."""
    target = str(file.resolve())
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if str(Path(frame.filename).resolve()) == target:
            line = frame.lineno
    return line


# ---- the set -----------------------------------------------------------------------------------


def _located(exc: DefinitionError, file: Path, line: int | None) -> DefinitionError:
    where = f"{file}, line {line}" if line else str(file)
    attrs = {k: v for k, v in exc.attrs().items() if k not in {"file", "line"}}
    return DefinitionError(f"{where}: {exc.message}", file=str(file), line=line, **attrs)


def _unique(found: list[tuple[Definition, Origin]]) -> LoadedDefinitions:
    origins: dict[tuple[str, str], Origin] = {}
    first: dict[tuple[str, str], Definition] = {}
    unique: list[Definition] = []
    for obj, origin in found:
        key = (kind_of(obj), obj.name)
        seen = first.get(key)
        if seen is None:
            first[key] = obj
            origins[key] = origin
            unique.append(obj)
        elif seen != obj:
            earlier = origins[key]
            raise DefinitionError(
                f"{origin.where()}: {key[0].replace('_', ' ')} {obj.name!r} is defined twice, "
                f"differently: also at {earlier.where()}",
                field=f"{key[0]}.name",
                file=str(origin.file),
                line=origin.line,
                other_file=str(earlier.file),
                other_line=earlier.line,
            )
    return LoadedDefinitions(unique, origins)


__all__ = [
    "PYTHON_SUFFIXES",
    "YAML_SUFFIXES",
    "LoadedDefinitions",
    "Origin",
    "load_definitions",
    "load_paths",
]
