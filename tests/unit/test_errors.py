"""The error tree: every error has a stable code, keeps its fields, survives pickling (errors cross
process boundaries in jobs), and the hierarchy drawn in the module docstring is the real one."""

from __future__ import annotations

import pickle
import re

import pytest

from potluck import errors
from potluck.errors import (
    ConflictError,
    DefinitionError,
    PotluckError,
    TerminalError,
    TransientError,
    UnavailableError,
)

CLASSES: list[type[PotluckError]] = [getattr(errors, name) for name in errors.__all__]
MARKERS = {TerminalError, TransientError}


def test_every_exported_name_is_an_error_class() -> None:
    assert all(isinstance(c, type) and issubclass(c, PotluckError) for c in CLASSES)
    assert sorted(errors.__all__) == errors.__all__
    public = {
        name
        for name, value in vars(errors).items()
        if isinstance(value, type) and issubclass(value, PotluckError)
    }
    assert public == set(errors.__all__)


def test_every_concrete_error_has_its_own_snake_case_code() -> None:
    concrete = [c for c in CLASSES if c not in MARKERS and c is not PotluckError]
    codes = [c.code for c in concrete]
    assert all(re.fullmatch(r"[a-z]+(_[a-z]+)*", code) for code in codes), codes
    assert len(set(codes)) == len(codes), codes
    assert all("code" in vars(c) for c in concrete)


def test_every_error_is_marked_retryable_or_not() -> None:
    for cls in CLASSES:
        if cls in MARKERS or cls is PotluckError:
            continue
        assert issubclass(cls, TerminalError) != issubclass(cls, TransientError), cls
    assert {c for c in CLASSES if issubclass(c, TransientError)} == {
        TransientError,
        ConflictError,
        UnavailableError,
    }
    assert issubclass(PotluckError, Exception)


def test_the_docstring_draws_the_real_hierarchy() -> None:
    doc = errors.__doc__ or ""
    block = doc.split("Hierarchy::", 1)[1].split("\n\n", 2)[1]
    drawn: dict[str, tuple[str | None, str | None]] = {}
    parents: list[str] = []
    for line in block.splitlines():
        match = re.match(r"^(\s*[│├└─ ]*)(\w+)\s+(\(marker\)|\w+)", line)
        assert match, line
        prefix, name, code = match.groups()
        depth = (len(prefix) - 4) // 4
        parents[depth:] = [name]
        drawn[name] = (
            parents[depth - 1] if depth else None,
            None if code in ("(marker)", "code") else code,
        )
    assert set(drawn) == set(errors.__all__)
    for name, (parent, code) in drawn.items():
        cls = getattr(errors, name)
        assert cls.__bases__[0].__name__ == (parent or "Exception"), name
        if code is not None:
            assert cls.code == code, name


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_errors_pickle_with_their_message_and_fields(cls: type[PotluckError]) -> None:
    fields = {"field": "feature_table.name"} if issubclass(cls, DefinitionError) else {}
    error = cls("something failed", table="driver_stats", row=3, **fields)
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is cls
    assert (back.message, str(back), back.code) == (
        "something failed",
        "something failed",
        cls.code,
    )
    assert back.attrs() == {"table": "driver_stats", "row": 3, **fields}
    assert back.table == "driver_stats"
    assert back.row == 3


def test_attrs_is_a_copy_and_definition_errors_require_a_field() -> None:
    error = DefinitionError("bad", field="entity.name")
    error.attrs()["field"] = "changed"
    assert error.field == "entity.name"
    with pytest.raises(TypeError):
        DefinitionError("bad")
