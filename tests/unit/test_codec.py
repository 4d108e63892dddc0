"""Entity key encoding: the golden vectors of docs/entity-key.md, both encoders, and errors.

Also the value encoding of ``online/_values.py`` where it has two paths (vectorised, and one by
one for lists holding null elements): both must give the same bytes.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from potluck.definitions.feature import Feature
from potluck.errors import ValidationError
from potluck.online._values import decode_records, encode_records, encode_values
from potluck.online.codec import encode_entity_key, encode_entity_keys, table_key_prefix
from potluck.types import ValueType, to_arrow_type

DOC = Path(__file__).resolve().parents[2] / "docs" / "entity-key.md"
UTC = timezone.utc


def _vectors() -> list[dict[str, Any]]:
    text = DOC.read_text()
    section = text.split("## Golden vectors", 1)[1]
    block = re.search(r"```json\n(.*?)```", section, re.S)
    assert block is not None, "docs/entity-key.md has no json block under 'Golden vectors'"
    vectors: list[dict[str, Any]] = json.loads(block.group(1))
    return vectors


def _python_value(type_name: str, raw: Any) -> Any:
    if type_name == "BYTES":
        return bytes.fromhex(raw)
    if type_name == "UNIX_TIMESTAMP":
        return datetime.fromisoformat(raw.replace("Z", "+00:00"))
    return raw


VECTORS = _vectors()


def test_the_doc_has_golden_vectors_for_every_scalar_type() -> None:
    types = {t for v in VECTORS for t, _ in v["entities"].values()}
    assert types == {t.name for t in ValueType if not t.is_list}
    assert len(VECTORS) == 12


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v["key"][-16:])
def test_golden_vector_from_python_values(vector: dict[str, Any]) -> None:
    types = {name: ValueType[t] for name, (t, _) in vector["entities"].items()}
    values = {name: _python_value(t, raw) for name, (t, raw) in vector["entities"].items()}
    key = encode_entity_key(vector["project"], vector["table"], values, types)
    assert key.hex() == vector["key"]
    assert key.startswith(table_key_prefix(vector["project"], vector["table"]))


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v["key"][-16:])
def test_golden_vector_from_arrow_columns(vector: dict[str, Any]) -> None:
    types = {name: ValueType[t] for name, (t, _) in vector["entities"].items()}
    columns = {
        name: pa.array([_python_value(t, raw)] * 2, to_arrow_type(ValueType[t]))
        for name, (t, raw) in vector["entities"].items()
    }
    keys = encode_entity_keys(vector["project"], vector["table"], columns, types)
    assert keys.type == pa.binary()
    assert [k.hex() for k in keys.to_pylist()] == [vector["key"]] * 2


def test_the_worked_example_matches_the_spec_byte_by_byte() -> None:
    key = encode_entity_key(
        "default", "driver_stats", {"driver_id": 1001}, {"driver_id": ValueType.INT64}
    )
    expected = (
        (7).to_bytes(4, "little")
        + b"default"
        + (12).to_bytes(4, "little")
        + b"driver_stats"
        + (9).to_bytes(4, "little")
        + b"driver_id"
        + bytes([4])
        + (1001).to_bytes(8, "little", signed=True)
    )
    assert key == expected


def test_arrow_and_python_encoders_agree_on_many_mixed_rows() -> None:
    n = 2_000
    rng = np.random.default_rng(7)
    ids = rng.integers(-(2**62), 2**62, n)
    names = [f"cust-{i}-é" * (i % 4) for i in range(n)]
    flags = rng.integers(0, 2, n).astype(bool)
    rates = rng.normal(size=n)
    stamps = [
        datetime(2020, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(i) * 7919) for i in range(n)
    ]
    types = {
        "id": ValueType.INT64,
        "name": ValueType.STRING,
        "flag": ValueType.BOOL,
        "rate": ValueType.DOUBLE,
        "at": ValueType.UNIX_TIMESTAMP,
        "small": ValueType.INT32,
    }
    columns = {
        "id": pa.array(ids),
        "name": pa.array(names),
        "flag": pa.array(flags),
        "rate": pa.array(rates),
        "at": pa.array(stamps, to_arrow_type(ValueType.UNIX_TIMESTAMP)),
        "small": pa.array(np.arange(n, dtype=np.int16)),
    }
    keys = encode_entity_keys("proj", "tbl", columns, types).to_pylist()
    for i in range(0, n, 97):
        row = {
            "id": int(ids[i]),
            "name": names[i],
            "flag": bool(flags[i]),
            "rate": float(rates[i]),
            "at": stamps[i],
            "small": i,
        }
        assert keys[i] == encode_entity_key("proj", "tbl", row, types)


def test_sliced_and_chunked_columns_encode_like_whole_ones() -> None:
    types = {"name": ValueType.STRING, "id": ValueType.INT64}
    names = pa.array(["a", "bb", "ccc", "dddd"])
    ids = pa.array([1, 2, 3, 4])
    whole = encode_entity_keys("p", "t", {"name": names, "id": ids}, types).to_pylist()
    sliced = encode_entity_keys("p", "t", {"name": names[1:], "id": ids[1:]}, types)
    chunked = encode_entity_keys(
        "p", "t", {"name": pa.chunked_array([names[:2], names[2:]]), "id": ids}, types
    )
    assert sliced.to_pylist() == whole[1:]
    assert chunked.to_pylist() == whole


def test_negative_zero_is_one_key_and_float_keys_round_to_float32() -> None:
    types = {"x": ValueType.DOUBLE}
    assert encode_entity_key("p", "t", {"x": -0.0}, types) == encode_entity_key(
        "p", "t", {"x": 0.0}, types
    )
    arrow = encode_entity_keys("p", "t", {"x": pa.array([-0.0, 0.0])}, types).to_pylist()
    assert arrow == [encode_entity_key("p", "t", {"x": 0.0}, types)] * 2
    f32 = {"x": ValueType.FLOAT}
    assert (
        encode_entity_key("p", "t", {"x": 0.1}, f32)
        == encode_entity_keys("p", "t", {"x": pa.array([0.1])}, f32)[0].as_py()
    )


def test_integer_columns_of_any_width_are_accepted_when_they_fit() -> None:
    types = {"id": ValueType.INT64}
    expected = encode_entity_key("p", "t", {"id": 5}, types)
    for arrow_type in (pa.int8(), pa.int16(), pa.int32(), pa.uint32(), pa.uint64()):
        column = pa.array([5], arrow_type)
        assert encode_entity_keys("p", "t", {"id": column}, types).to_pylist() == [expected]
    assert encode_entity_key("p", "t", {"id": np.int32(5)}, types) == expected


@pytest.mark.parametrize(
    ("value_type", "value", "message"),
    [
        (ValueType.INT64, "abc", "entity driver_id: expected INT64, got 'abc' (str)"),
        (ValueType.INT64, True, "entity driver_id: expected INT64, got True (bool)"),
        (ValueType.INT64, 1.0, "entity driver_id: expected INT64, got 1.0 (float)"),
        (ValueType.INT32, 2**31, "entity driver_id: 2147483648 is out of range for INT32"),
        (
            ValueType.INT64,
            -(2**63) - 1,
            "entity driver_id: -9223372036854775809 is out of range for INT64",
        ),
        (ValueType.STRING, 7, "entity driver_id: expected STRING, got 7 (int)"),
        (ValueType.BYTES, "ab", "entity driver_id: expected BYTES, got 'ab' (str)"),
        (ValueType.BOOL, 1, "entity driver_id: expected BOOL, got 1 (int)"),
        (ValueType.DOUBLE, False, "entity driver_id: expected DOUBLE, got False (bool)"),
        (ValueType.DOUBLE, float("nan"), "entity driver_id: NaN is not a valid DOUBLE key"),
        (
            ValueType.UNIX_TIMESTAMP,
            1_600_000_000,
            "entity driver_id: expected UNIX_TIMESTAMP, got 1600000000 (int)",
        ),
    ],
)
def test_wrong_python_values_name_the_entity_and_value(
    value_type: ValueType, value: Any, message: str
) -> None:
    with pytest.raises(ValidationError) as info:
        encode_entity_key("p", "t", {"driver_id": value}, {"driver_id": value_type})
    assert info.value.message == message
    assert info.value.attrs()["entity"] == "driver_id"


def test_a_missing_entity_value_is_named() -> None:
    with pytest.raises(ValidationError) as info:
        encode_entity_key(
            "p", "t", {"driver_id": 1}, {"driver_id": ValueType.INT64, "city": ValueType.STRING}
        )
    assert info.value.message == "entity city: no value given"


def test_extra_values_are_ignored() -> None:
    types = {"driver_id": ValueType.INT64}
    assert encode_entity_key("p", "t", {"driver_id": 1, "other": "x"}, types) == (
        encode_entity_key("p", "t", {"driver_id": 1}, types)
    )


@pytest.mark.parametrize(
    ("column", "value_type", "message"),
    [
        (
            pa.array(["1"]),
            ValueType.INT64,
            "entity driver_id: expected INT64, got a column of type string",
        ),
        (
            pa.array([1.5]),
            ValueType.INT64,
            "entity driver_id: expected INT64, got a column of type double",
        ),
        (
            pa.array([True]),
            ValueType.INT64,
            "entity driver_id: expected INT64, got a column of type bool",
        ),
        (
            pa.array([1, None, 3]),
            ValueType.INT64,
            "entity driver_id: row 1 is null; entity keys must not be null",
        ),
        (
            pa.array([1, 2**40]),
            ValueType.INT32,
            "entity driver_id: values from 1 to 1099511627776 do not fit INT32",
        ),
        (
            pa.array([0.5, float("nan")]),
            ValueType.DOUBLE,
            "entity driver_id: row 1 is NaN, which is not a valid DOUBLE key",
        ),
    ],
)
def test_wrong_arrow_columns_name_the_entity(
    column: pa.Array, value_type: ValueType, message: str
) -> None:
    with pytest.raises(ValidationError) as info:
        encode_entity_keys("p", "t", {"driver_id": column}, {"driver_id": value_type})
    assert info.value.message == message


def test_columns_of_different_lengths_are_rejected() -> None:
    with pytest.raises(ValidationError) as info:
        encode_entity_keys(
            "p",
            "t",
            {"a": pa.array([1, 2]), "b": pa.array([1])},
            {"a": ValueType.INT64, "b": ValueType.INT64},
        )
    assert info.value.message == "entity columns differ in length (a=2, b=1)"


def test_encoding_100k_keys_is_vectorised() -> None:
    ids = pa.array(np.arange(100_000))
    keys = encode_entity_keys("p", "t", {"id": ids}, {"id": ValueType.INT64})
    assert len(keys) == 100_000
    assert keys[99_999].as_py() == encode_entity_key(
        "p", "t", {"id": 99_999}, {"id": ValueType.INT64}
    )


LIST_CASES = [
    (ValueType.INT64_LIST, [[1, 2], [], None, [-(2**63)]], 8),
    (ValueType.STRING_LIST, [["a", "☕"], [], None, [""]], 4),
    (ValueType.BYTES_LIST, [[b"\x00"], [], None, [b"", b"xy"]], 4),
    (ValueType.BOOL_LIST, [[True, False], [], None, [True]], 1),
    (ValueType.FLOAT_LIST, [[0.5], [], None, [1.5, -2.0]], 4),
    (
        ValueType.UNIX_TIMESTAMP_LIST,
        [[datetime(2021, 1, 1, tzinfo=UTC)], [], None, [datetime(1970, 1, 1, tzinfo=UTC)]],
        8,
    ),
]


@pytest.mark.parametrize(
    ("value_type", "values", "width"), LIST_CASES, ids=[c[0].name for c in LIST_CASES]
)
def test_lists_with_and_without_null_elements_share_one_encoding(
    value_type: ValueType, values: list[Any], width: int
) -> None:
    arrow_type = to_arrow_type(value_type)
    vectorised = encode_values(pa.array(values, arrow_type), value_type).to_pylist()
    with_nulls = [*values, [values[0][0], None]]
    one_by_one = encode_values(pa.array(with_nulls, arrow_type), value_type).to_pylist()
    assert one_by_one[:-1] == vectorised
    assert vectorised[1] == bytes([value_type.value]) + bytes(4)
    assert vectorised[2] == b""
    first = vectorised[0][5 : 5 + len(vectorised[0]) - 5]
    head = bytes([value_type.value | 0x80]) + (2).to_bytes(4, "little") + bytes([0b01])
    assert one_by_one[-1].startswith(head)
    assert one_by_one[-1].endswith(bytes(width))
    assert first.startswith(one_by_one[-1][len(head) : -width])
    feature = Feature(name="f", value_type=value_type)
    records = encode_records([pa.array(with_nulls, arrow_type)], [feature]).to_pylist()
    assert decode_records(records, 0, [feature])[0].to_pylist() == with_nulls


def test_scalar_values_are_tag_then_little_endian_payload() -> None:
    cases = [
        (ValueType.INT32, -2, bytes([3]) + (-2).to_bytes(4, "little", signed=True)),
        (ValueType.INT64, 1001, bytes([4]) + (1001).to_bytes(8, "little")),
        (ValueType.BOOL, True, bytes([7, 1])),
        (ValueType.STRING, "é", bytes([2]) + "é".encode()),
        (ValueType.BYTES, b"", bytes([1])),
        (
            ValueType.UNIX_TIMESTAMP,
            datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC),
            bytes([8]) + (1_000_000).to_bytes(8, "little"),
        ),
    ]
    for value_type, value, expected in cases:
        column = pa.array([value, None], to_arrow_type(value_type))
        assert encode_values(column, value_type).to_pylist() == [expected, b""]


def test_records_name_their_features_so_reads_survive_added_and_removed_features() -> None:
    old = [
        Feature(name="a", value_type=ValueType.INT64),
        Feature(name="b", value_type=ValueType.STRING),
    ]
    records = encode_records([pa.array([1, None]), pa.array(["x", "y"])], old).to_pylist()
    new = [
        Feature(name="b", value_type=ValueType.STRING),
        Feature(name="c", value_type=ValueType.DOUBLE),
    ]
    b, c = decode_records([*records, None], 0, new)
    assert b.to_pylist() == ["x", "y", None]
    assert c.to_pylist() == [None, None, None]
    retyped = [Feature(name="a", value_type=ValueType.STRING)]
    assert decode_records(records, 0, retyped)[0].to_pylist() == [None, None]
