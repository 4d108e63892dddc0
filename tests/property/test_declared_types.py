"""Every cell is stored exactly as its declared type says, or refused at its column and true row.

For every value type (scalars and lists), hypothesis generates a column of cells (nulls, edge
values, values of other types) as a DataFrame object column and, separately, as CSV fields
(valid spellings, near misses, arbitrary text). The column is ingested through
``Client.ingest`` into a batch source on embedded defaults and read back with
``get_historical_features``; the result must equal a brute-force reference written from the
rules in ``docs/historical.md`` ("How values are read"), or the ingestion must fail with a
``DataValidationError`` naming the column and the first refused row.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from potluck import Client, Entity, Feature, FeatureTable, FileSource, ValueType
from potluck.config import Settings
from potluck.errors import DataValidationError

UTC = timezone.utc
EVENT = datetime(2024, 1, 1, tzinfo=UTC)
SETTINGS = settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
ROW_ID = Entity(name="row_id", value_type=ValueType.INT64)
_KEYS = itertools.count(1)


class Refused:
    """The reference's verdict for a cell the declared type does not admit."""


REFUSED = Refused()


# ---- the reference: the documented rules, in plain Python --------------------------------------

_INT_BITS = {ValueType.INT32: 32, ValueType.INT64: 64}


def _is_null(value: Any) -> bool:
    return (
        value is None
        or value is pd.NA
        or value is pd.NaT
        or (isinstance(value, float) and math.isnan(value))
    )


def _float32(value: float) -> float | Refused:
    with np.errstate(over="ignore"):
        single = float(np.float32(value))
    return REFUSED if math.isinf(single) and not math.isinf(value) else single


def reference_object(value: Any, value_type: ValueType) -> Any:
    """What a DataFrame object cell becomes: a Python value, ``None``, or ``REFUSED``."""
    if _is_null(value):
        return None
    if value_type.is_list:
        if not isinstance(value, (list, tuple)):
            return REFUSED
        items = [reference_object(item, value_type.element_type) for item in value]
        return REFUSED if any(item is REFUSED for item in items) else items
    if isinstance(value, bool):
        return value if value_type is ValueType.BOOL else REFUSED
    if value_type in _INT_BITS:
        half = 2 ** (_INT_BITS[value_type] - 1)
        number = isinstance(value, (int, float, Decimal))
        if number and math.isfinite(value) and -half <= value < half and value == int(value):
            return int(value)
        return REFUSED
    if value_type in (ValueType.DOUBLE, ValueType.FLOAT):
        limit = 2**53 if value_type is ValueType.DOUBLE else 2**24
        if isinstance(value, int):
            return REFUSED if abs(value) > limit else float(value)
        if isinstance(value, (float, Decimal)):
            number = float(value)
            return number if value_type is ValueType.DOUBLE else _float32(number)
        return REFUSED
    if value_type is ValueType.STRING:
        if isinstance(value, bytes):
            try:
                return value.decode("utf-8")
            except UnicodeDecodeError:
                return REFUSED
        return value if isinstance(value, str) else REFUSED
    if value_type is ValueType.BYTES:
        if isinstance(value, str):
            return value.encode("utf-8")
        return value if isinstance(value, bytes) else REFUSED
    if value_type is ValueType.UNIX_TIMESTAMP:
        if isinstance(value, str):
            return _iso(value)
        if isinstance(value, pd.Timestamp) and value.nanosecond:
            return REFUSED
        if isinstance(value, datetime):
            if value.tzinfo is None:
                return value.replace(tzinfo=UTC)
            try:
                return value.astimezone(UTC)
            except OverflowError:
                return REFUSED
        if isinstance(value, date):
            return datetime(value.year, value.month, value.day, tzinfo=UTC)
        return REFUSED
    return REFUSED  # BOOL: only bools


_ISO = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
    r"([T ][0-9]{2}(:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?)?(Z|[+-][0-9]{2}(:?[0-9]{2})?)?)?"
)
"""ISO 8601 as documented: a date, then optionally a time of day and a zone."""


def _iso(text: str) -> Any:
    if not _ISO.fullmatch(text):
        return REFUSED
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return REFUSED
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        return REFUSED


_NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
_INFINITY = re.compile(r"[+-]?inf(inity)?", re.IGNORECASE)


def reference_text(field: str | None, value_type: ValueType) -> Any:
    """What a CSV field becomes (``None`` is an unquoted empty field)."""
    if field is None:
        return None
    if value_type is ValueType.STRING:
        return field
    if value_type is ValueType.BYTES:
        return field.encode("utf-8")
    if field == "":
        return None
    if value_type.is_list:
        try:
            items = json.loads(field, parse_constant=_refuse_constant)
        except ValueError:
            return REFUSED
        return reference_object(items, value_type) if isinstance(items, list) else REFUSED
    if value_type in _INT_BITS:
        if not _NUMBER.fullmatch(field):
            return REFUSED
        return reference_object(Decimal(field), value_type)
    if value_type in (ValueType.DOUBLE, ValueType.FLOAT):
        if _INFINITY.fullmatch(field):
            return float(field)
        if not _NUMBER.fullmatch(field):
            return REFUSED
        number = float(field)
        if math.isinf(number):
            return REFUSED
        return number if value_type is ValueType.DOUBLE else _float32(number)
    if value_type is ValueType.BOOL:
        return {"true": True, "1": True, "false": False, "0": False}.get(field.lower(), REFUSED)
    return _iso(field)


def _refuse_constant(name: str) -> Any:
    raise ValueError(name)


# ---- generated cells ---------------------------------------------------------------------------

_ZONES = st.one_of(
    st.none(),
    st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m))),
)
_DATETIMES = st.datetimes(
    min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31), timezones=_ZONES
)
_NULLS = st.sampled_from([None, float("nan"), pd.NA, pd.NaT])
_EDGE_INTS = st.sampled_from(
    [
        0,
        -1,
        2**24,
        2**24 + 1,
        2**31 - 1,
        2**31,
        -(2**31),
        2**53,
        2**53 + 1,
        2**63 - 1,
        2**63,
        -(2**63),
        -(2**63) - 1,
        2**70,
    ]
)
_ANYTHING = st.one_of(
    _NULLS,
    st.integers(-(2**65), 2**65) | _EDGE_INTS,
    st.floats(allow_nan=False),
    st.booleans(),
    st.text(max_size=8),
    st.binary(max_size=8),
    _DATETIMES,
    st.dates(),
    st.integers(-(10**6), 10**6).map(Decimal),
    st.builds(
        lambda ts, ns: pd.Timestamp(ts) + pd.Timedelta(nanoseconds=ns),
        st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1)),
        st.integers(0, 999),
    ),
)


def _valid(value_type: ValueType) -> st.SearchStrategy[Any]:
    """Cells the type admits (the other generated cells mostly do not)."""
    scalar: dict[ValueType, st.SearchStrategy[Any]] = {
        ValueType.INT32: st.integers(-(2**31), 2**31 - 1),
        ValueType.INT64: st.integers(-(2**63), 2**63 - 1) | st.integers(-(2**53), 2**53).map(float),
        ValueType.DOUBLE: st.floats(allow_nan=False) | st.integers(-(2**53), 2**53),
        ValueType.FLOAT: st.floats(width=32, allow_nan=False) | st.floats(allow_nan=False),
        ValueType.BOOL: st.booleans(),
        ValueType.STRING: st.text(max_size=12) | st.sampled_from(["NA", "null", "N/A", "NaN", ""]),
        ValueType.BYTES: st.binary(max_size=12),
        ValueType.UNIX_TIMESTAMP: _DATETIMES | st.dates() | _DATETIMES.map(datetime.isoformat),
    }
    if value_type.is_list:
        element = _cell(value_type.element_type)
        return st.lists(element, max_size=4) | st.lists(element, max_size=3).map(tuple)
    return scalar[value_type]


def _cell(value_type: ValueType) -> st.SearchStrategy[Any]:
    return st.one_of(_valid(value_type), _valid(value_type), _NULLS, _ANYTHING)


@st.composite
def _column(draw: st.DrawFn, value_type: ValueType) -> list[Any]:
    """Usually cells of one kind (pyarrow's fast path), sometimes any mix."""
    cell = draw(st.sampled_from([_valid(value_type) | _NULLS, _cell(value_type)]))
    return draw(st.lists(cell, min_size=1, max_size=6))


# ---- CSV renderings ----------------------------------------------------------------------------

_NEAR_MISSES = st.sampled_from(
    [
        "nan",
        "NaN",
        "NA",
        "null",
        "0x10",
        " 1",
        "1 ",
        "1e400",
        "-1e400",
        "1.5",
        "1e3",
        "+7",
        "-0",
        "yes",
        "TRUE",
        "t",
        "[1,",
        "[NaN]",
        "[1.5]",
        '["a"]',
        "{}",
        "inf",
        "-Infinity",
        "1714521600",
        "2024-13-01",
        "2024-05-01T25:00:00",
        "1_000",
        "٣",
        ".5",
        "5.",
        "",
    ]
)


def _spelling(value: Any, value_type: ValueType) -> str | None:
    """A documented CSV spelling of a value the type admits (``None``: an unquoted empty field)."""
    if value is None:
        return None
    if value_type.is_list:
        return json.dumps([_json(item, value_type.element_type) for item in value])
    if value_type is ValueType.BYTES:
        return value.decode("utf-8") if isinstance(value, bytes) else value
    if value_type is ValueType.BOOL:
        return "true" if value else "false"
    if value_type is ValueType.UNIX_TIMESTAMP:
        return value.isoformat()
    return str(value) if isinstance(value, str) else repr(value)


def _json(value: Any, value_type: ValueType) -> Any:
    if value is None or value_type in (ValueType.BOOL, ValueType.STRING):
        return value
    if value_type is ValueType.BYTES:
        return value.decode("utf-8")
    if value_type is ValueType.UNIX_TIMESTAMP:
        return value.isoformat()
    return value


@st.composite
def _field(draw: st.DrawFn, value_type: ValueType) -> str | None:
    kind = draw(st.sampled_from(["valid", "valid", "miss", "text", "null"]))
    if kind == "null":
        return None
    if kind == "miss":
        return draw(_NEAR_MISSES)
    if kind == "text" and value_type is not ValueType.UNIX_TIMESTAMP:
        return draw(st.text(max_size=8))
    value = reference_object(draw(_valid(value_type)), value_type)
    if value is REFUSED or value is None or not _renderable(value, value_type):
        return draw(_NEAR_MISSES)
    return _spelling(value, value_type)


def _renderable(value: Any, value_type: ValueType) -> bool:
    """Whether CSV can spell ``value`` (only bytes that are not UTF-8 cannot)."""
    if value_type.is_list:
        return all(item is None or _renderable(item, value_type.element_type) for item in value)
    if isinstance(value, bytes):
        try:
            value.decode("utf-8")
        except UnicodeDecodeError:
            return False
    return True


def _csv_line(fields: list[str | None]) -> str:
    return ",".join("" if f is None else '"' + f.replace('"', '""') + '"' for f in fields)


# ---- the round trip ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    root: Path = tmp_path_factory.mktemp("declared")
    with Client(settings=Settings(registry=f"sqlite:///{root}/registry.db", root=root)) as client:
        client.apply(ROW_ID)
        for value_type in ValueType:
            client.apply(
                FeatureTable(
                    name=_table(value_type),
                    entities=["row_id"],
                    features=[Feature(name="v", value_type=value_type)],
                    batch_source=FileSource(
                        path=f"data/{value_type.name.lower()}", event_timestamp_column="at"
                    ),
                )
            )
        yield client


def _table(value_type: ValueType) -> str:
    return f"t_{value_type.name.lower()}"


def _check(
    client: Client, value_type: ValueType, data: Any, keys: list[int], expected: list[Any]
) -> None:
    refused = [row for row, value in enumerate(expected) if value is REFUSED]
    if refused:
        with pytest.raises(DataValidationError) as caught:
            client.ingest(_table(value_type), data)
        assert caught.value.attrs() == {"column": "v", "row": refused[0]}, caught.value.message
        return
    client.ingest(_table(value_type), data)
    entities = pd.DataFrame({"row_id": keys, "event_timestamp": [EVENT] * len(keys)})
    result = client.get_historical_features([f"{_table(value_type)}:v"], entities).to_arrow()
    assert result.column(f"{_table(value_type)}__v").to_pylist() == expected


@pytest.mark.parametrize("value_type", list(ValueType), ids=lambda t: t.name)
@SETTINGS
@given(data=st.data())
def test_dataframe_object_columns_round_trip_or_are_refused(
    client: Client, value_type: ValueType, data: st.DataObject
) -> None:
    cells = data.draw(_column(value_type), label="cells")
    keys = [next(_KEYS) for _ in cells]
    frame = pd.DataFrame(
        {
            "row_id": keys,
            "at": [EVENT - timedelta(seconds=1)] * len(cells),
            "v": pd.Series(cells, dtype=object),
        }
    )
    expected = [reference_object(cell, value_type) for cell in cells]
    _check(client, value_type, frame, keys, expected)


@pytest.mark.parametrize("value_type", list(ValueType), ids=lambda t: t.name)
@SETTINGS
@given(data=st.data())
def test_csv_fields_round_trip_or_are_refused(
    client: Client,
    value_type: ValueType,
    data: st.DataObject,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    fields = data.draw(st.lists(_field(value_type), min_size=1, max_size=6), label="fields")
    keys = [next(_KEYS) for _ in fields]
    lines = ["row_id,at,v"] + [
        f"{key},2023-12-31T23:59:59Z,{_csv_line([field])}"
        for key, field in zip(keys, fields, strict=True)
    ]
    path = tmp_path_factory.mktemp("csv") / "rows.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    expected = [reference_text(field, value_type) for field in fields]
    _check(client, value_type, path, keys, expected)
