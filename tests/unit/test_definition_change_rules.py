"""The rules by which stored online values follow definition changes, as pure functions.

Which type changes are lossless widenings (``potluck.types``), how a value stored under a
narrower type reads back as the wider one (``potluck.online._values``, by hypothesis against
plain Python conversion), and which changes the plan warns about (``potluck.registry.plan``).
"""

from __future__ import annotations

import struct
from datetime import timedelta
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from potluck.definitions import Entity, Feature, FeatureTable
from potluck.definitions.serde import KIND_ENTITY, KIND_FEATURE_TABLE, to_dict
from potluck.online._values import decode_records, encode_records
from potluck.registry.plan import StoredObject, plan_apply
from potluck.types import ValueType, is_lossless_widening, to_arrow_type

WIDENINGS = {
    (ValueType.INT32, ValueType.INT64),
    (ValueType.INT32, ValueType.DOUBLE),
    (ValueType.FLOAT, ValueType.DOUBLE),
    (ValueType.STRING, ValueType.BYTES),
    (ValueType.INT32_LIST, ValueType.INT64_LIST),
    (ValueType.INT32_LIST, ValueType.DOUBLE_LIST),
    (ValueType.FLOAT_LIST, ValueType.DOUBLE_LIST),
    (ValueType.STRING_LIST, ValueType.BYTES_LIST),
}


def test_the_lossless_widenings_are_exactly_these() -> None:
    found = {(a, b) for a in ValueType for b in ValueType if is_lossless_widening(a, b)}
    assert found == WIDENINGS


# ---- reading values stored under a narrower type ------------------------------------------------

_FLOAT32 = st.floats(width=32, allow_nan=False)
_NARROW: dict[ValueType, st.SearchStrategy[Any]] = {
    ValueType.INT32: st.integers(-(2**31), 2**31 - 1),
    ValueType.FLOAT: _FLOAT32,
    ValueType.STRING: st.text(),
    ValueType.INT32_LIST: st.lists(st.one_of(st.none(), st.integers(-(2**31), 2**31 - 1))),
    ValueType.FLOAT_LIST: st.lists(st.one_of(st.none(), _FLOAT32)),
    ValueType.STRING_LIST: st.lists(st.one_of(st.none(), st.text())),
}


def _widened(value: Any, target: ValueType) -> Any:
    """What a training set holds for ``value`` converted to ``target`` (plain Python)."""
    if value is None:
        return None
    if target.is_list:
        return [_widened(item, target.element_type) for item in value]
    if target is ValueType.DOUBLE:
        return float(value)
    if target is ValueType.BYTES:
        return value.encode()
    return value


@pytest.mark.parametrize("pair", sorted(WIDENINGS), ids=lambda p: f"{p[0].name}-{p[1].name}")
@settings(max_examples=60, deadline=None, database=None)
@given(data=st.data())
def test_values_stored_as_a_narrower_type_read_as_the_wider_one(
    pair: tuple[ValueType, ValueType], data: st.DataObject
) -> None:
    narrow, wide = pair
    values = data.draw(st.lists(st.one_of(st.none(), _NARROW[narrow]), max_size=8))
    written = Feature(name="f", value_type=narrow)
    stored = encode_records([pa.array(values, to_arrow_type(narrow))], [written]).to_pylist()
    (column,) = decode_records(stored, 0, [Feature(name="f", value_type=wide)])
    assert column.type == to_arrow_type(wide)
    assert column.to_pylist() == [_widened(v, wide) for v in values]


@pytest.mark.parametrize(
    ("written", "read_as"),
    [
        (ValueType.INT64, ValueType.INT32),
        (ValueType.DOUBLE, ValueType.FLOAT),
        (ValueType.INT64, ValueType.DOUBLE),
        (ValueType.BYTES, ValueType.STRING),
        (ValueType.INT32, ValueType.INT32_LIST),
        (ValueType.INT32_LIST, ValueType.INT64),
        (ValueType.BOOL, ValueType.INT32),
    ],
)
def test_values_of_a_type_that_does_not_widen_read_as_null(
    written: ValueType, read_as: ValueType
) -> None:
    sample: dict[ValueType, Any] = {
        ValueType.INT64: 7,
        ValueType.DOUBLE: 0.5,
        ValueType.BYTES: b"x",
        ValueType.INT32: 7,
        ValueType.INT32_LIST: [7],
        ValueType.BOOL: True,
    }
    feature = Feature(name="f", value_type=written)
    stored = encode_records([pa.array([sample[written]], to_arrow_type(written))], [feature])
    (column,) = decode_records(stored.to_pylist(), 0, [Feature(name="f", value_type=read_as)])
    assert column.to_pylist() == [None]


def test_a_float_widens_to_the_double_of_its_float32_value() -> None:
    feature = Feature(name="f", value_type=ValueType.FLOAT)
    stored = encode_records([pa.array([0.1], pa.float32())], [feature]).to_pylist()
    (column,) = decode_records(stored, 0, [Feature(name="f", value_type=ValueType.DOUBLE)])
    assert column.to_pylist() == [struct.unpack("<f", struct.pack("<f", 0.1))[0]]
    assert column.to_pylist() == [0.10000000149011612]


# ---- plan warnings ------------------------------------------------------------------------------

DRIVER = Entity(name="driver_id", value_type=ValueType.INT64)


def _table(
    max_age: timedelta | None = None,
    trips: ValueType = ValueType.INT32,
    entities: tuple[str, ...] = ("driver_id",),
) -> FeatureTable:
    return FeatureTable(
        name="stats",
        entities=entities,
        features=(Feature(name="trips", value_type=trips),),
        max_age=max_age,
    )


def _details(old: FeatureTable, new: FeatureTable, *, force: bool = False) -> tuple[str, ...]:
    stored = {
        (KIND_ENTITY, "driver_id"): StoredObject(KIND_ENTITY, "driver_id", 0, to_dict(DRIVER)),
        (KIND_ENTITY, "city"): StoredObject(
            KIND_ENTITY, "city", 0, to_dict(Entity(name="city", value_type=ValueType.STRING))
        ),
        (KIND_FEATURE_TABLE, "stats"): StoredObject(KIND_FEATURE_TABLE, "stats", 1, to_dict(old)),
    }
    (change,) = plan_apply([new], stored, {}, force=force).changes
    return change.details


RAISE = (
    "warning: raising max_age of stats: values that already expired from the online store are "
    "not restored; run `potluck ingest-online stats --full` to reload them"
)
REMOVE = RAISE.replace("raising", "removing")
HOUR = timedelta(hours=1)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (HOUR, 2 * HOUR, ("max_age 1h -> 2h", RAISE)),
        (HOUR, None, ("max_age 1h -> none", REMOVE)),
        (HOUR, HOUR / 2, ("max_age 1h -> 30m",)),
        (None, HOUR, ("max_age none -> 1h",)),
        (HOUR, HOUR, ()),
    ],
)
def test_plan_warns_when_max_age_goes_up_or_away(
    old: timedelta | None, new: timedelta | None, expected: tuple[str, ...]
) -> None:
    assert _details(_table(old), _table(new)) == expected


@pytest.mark.parametrize(("old", "new"), sorted(WIDENINGS))
def test_plan_says_nothing_more_about_a_lossless_widening(old: ValueType, new: ValueType) -> None:
    assert _details(_table(trips=old), _table(trips=new), force=True) == (
        f"~ feature trips {old.name} -> {new.name} (forced)",
    )


def test_plan_warns_about_a_type_change_that_is_not_a_widening() -> None:
    assert _details(_table(trips=ValueType.INT64), _table(trips=ValueType.INT32), force=True) == (
        "~ feature trips INT64 -> INT32 (forced)",
        "warning: feature trips of stats changes type INT64 -> INT32, which is not a lossless "
        "widening: values stored online as INT64 read as NULL_VALUE; run "
        "`potluck ingest-online stats --full` to reload them",
    )


def test_plan_warns_when_the_keys_change_but_not_when_entities_are_reordered() -> None:
    two = ("driver_id", "city")
    assert _details(_table(), _table(entities=two), force=True) == (
        "entities [driver_id] -> [driver_id, city] (forced)",
        "warning: feature table stats: its entities change, so values stored online under the old "
        "keys are no longer read (NOT_FOUND); run `potluck online purge stats` to remove them and "
        "`potluck ingest-online stats --full` to reload",
    )
    assert _details(_table(entities=two), _table(entities=("city", "driver_id"))) == (
        "entities [driver_id, city] -> [city, driver_id]",
    )
