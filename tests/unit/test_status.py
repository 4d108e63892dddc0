from __future__ import annotations

from potluck.serving.status import (
    NOT_FOUND,
    NULL_VALUE,
    OUTSIDE_MAX_AGE,
    PRESENT,
    FieldStatus,
    row_status,
    row_statuses,
    value_statuses,
)

HOUR_US = 3_600_000_000
NOW = 1_700_000_000_000_000


def test_numbers_are_feasts() -> None:
    assert {s.name: int(s) for s in FieldStatus} == {
        "INVALID": 0,
        "PRESENT": 1,
        "NULL_VALUE": 2,
        "NOT_FOUND": 3,
        "OUTSIDE_MAX_AGE": 4,
    }


def test_row_status_max_age_edge_is_inclusive() -> None:
    assert row_status(None, HOUR_US, NOW) is NOT_FOUND
    assert row_status(NOW - HOUR_US, HOUR_US, NOW) is PRESENT
    assert row_status(NOW - HOUR_US - 1, HOUR_US, NOW) is OUTSIDE_MAX_AGE
    assert row_status(NOW - 1000 * HOUR_US, None, NOW) is PRESENT
    assert row_status(NOW + HOUR_US, HOUR_US, NOW) is PRESENT


def test_row_statuses_agree_with_row_status() -> None:
    events = [None, NOW, NOW - HOUR_US, NOW - HOUR_US - 1, 0]
    for max_age in (None, HOUR_US):
        assert row_statuses(events, max_age, NOW) == [row_status(e, max_age, NOW) for e in events]


def test_value_statuses_withhold_values_of_rows_that_are_not_live() -> None:
    values = [1.5, None, 2.5, 3.5]
    rows = [PRESENT, PRESENT, NOT_FOUND, OUTSIDE_MAX_AGE]
    assert value_statuses(values, rows) == [PRESENT, NULL_VALUE, NOT_FOUND, OUTSIDE_MAX_AGE]
    assert values == [1.5, None, None, None]
