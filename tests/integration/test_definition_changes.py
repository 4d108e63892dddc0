"""Online values follow definition changes as training sets do (issue 7, section 3).

A matrix over the three built-in online stores (SQLite, Redis, Redis Cluster) and every change
``apply`` allows: ``max_age`` raised, lowered and removed; each lossless type widening (and a
forced type change that is not one); features added, archived and restored. Each case ingests
rows, loads them online, applies the change, and then compares an online read with a training
set taken at the same moment (entity rows at ``event_timestamp = now``): a ``PRESENT`` value must
equal the training value, and every other status (``NOT_FOUND``, ``OUTSIDE_MAX_AGE``,
``NULL_VALUE``) must meet a null in the training set. The only gaps are the ones ``plan`` warns
about, and each is shown closed by the repair command it names.

Real time is used only where physical expiry is the point (a 3-second ``max_age``); other cases
put event times well inside or outside ``max_age``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest
import yaml
from typer.testing import CliRunner

from potluck import Client, Entity, Feature, FeatureTable, FileSource, ValueType
from potluck.cli.main import app
from potluck.config import load_settings
from potluck.errors import FeatureRefError
from potluck.types import TIMESTAMP_ARROW_TYPE, is_lossless_widening, to_arrow_type

UTC = timezone.utc
DRIVER = Entity(name="driver_id", value_type=ValueType.INT64)
OLD_MAX_AGE = timedelta(seconds=3)
"""The max_age of the cases that watch values physically expire."""


def _online_config(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> dict[str, Any]:
    if kind == "sqlite":
        return {"type": "sqlite", "path": str(tmp_path / "online.db")}
    if kind == "redis":
        return {"type": "redis", "url": request.getfixturevalue("redis_url")}
    nodes = request.getfixturevalue("redis_cluster_nodes")
    return {"type": "redis_cluster", "startup_nodes": nodes[:1]}


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("redis_cluster", marks=pytest.mark.redis_cluster),
    ]
)
def client(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Client]:
    settings = {
        "project": f"changes_{time.time_ns()}",
        "registry": "sqlite:///registry.db",
        "online_store": _online_config(str(request.param), tmp_path, request),
        "offline_store": {"type": "duckdb"},
        "engine": {"type": "local"},
    }
    config = tmp_path / "potluck.yaml"
    config.write_text(yaml.safe_dump(settings))
    c = Client(settings=load_settings(config))
    c.apply([DRIVER])
    yield c
    for table in c.list_feature_tables():
        c.purge_online(table.name)
    c.close()


def _table(
    client: Client,
    name: str,
    features: Mapping[str, ValueType],
    max_age: timedelta | None = None,
) -> FeatureTable:
    return FeatureTable(
        name=name,
        entities=("driver_id",),
        features=tuple(Feature(name=f, value_type=t) for f, t in features.items()),
        max_age=max_age,
        batch_source=FileSource(
            path=str(client.settings.root / "data" / name),
            event_timestamp_column="event_timestamp",
            created_timestamp_column="created",
        ),
    )


def _ingest(client: Client, table: FeatureTable, rows: Sequence[Mapping[str, Any]]) -> None:
    """Ingest ``rows`` (driver_id, event_timestamp, feature values) typed as ``table`` says."""
    columns: dict[str, pa.Array] = {
        "driver_id": pa.array([r["driver_id"] for r in rows], pa.int64()),
        "event_timestamp": pa.array([r["event_timestamp"] for r in rows], TIMESTAMP_ARROW_TYPE),
        "created": pa.array([r["event_timestamp"] for r in rows], TIMESTAMP_ARROW_TYPE),
    }
    for feature in table.features:
        columns[feature.name] = pa.array(
            [r.get(feature.name) for r in rows], to_arrow_type(feature.value_type)
        )
    client.ingest(table, pa.table(columns))


def _load(client: Client, table: FeatureTable, *, full: bool = False) -> None:
    client.start_offline_to_online_ingestion(table.name, full=full).wait()


def _compare(client: Client, refs: Sequence[str], drivers: Sequence[int]) -> list[dict[str, Any]]:
    """Read ``refs`` online and as a training set at the same moment; check they agree.

    Returns:
        Per driver, ``{column: (status, online value)}``.
    """
    now = datetime.now(UTC)
    entity_rows = pd.DataFrame(
        {
            "driver_id": pd.Series(drivers, dtype="int64"),
            "event_timestamp": pd.Series([now] * len(drivers)),
        }
    )
    training = client.get_historical_features(refs, entity_rows).to_arrow().to_pylist()
    response = client.get_online_features(refs, {"driver_id": list(drivers)})
    values, statuses = response.to_dict(), response.statuses()
    seen: list[dict[str, Any]] = []
    for row, offline in enumerate(training):
        out: dict[str, Any] = {}
        for name in response.names[1:]:
            status, online = statuses[name][row], values[name][row]
            if status == "PRESENT":
                assert online == offline[name], (name, row, online, offline[name])
            else:
                assert offline[name] is None, (name, row, status, offline[name])
            out[name] = (status, online)
        seen.append(out)
    return seen


def _training(client: Client, refs: Sequence[str], drivers: Sequence[int]) -> list[Any]:
    now = datetime.now(UTC)
    entity_rows = pd.DataFrame(
        {"driver_id": pd.Series(drivers, dtype="int64"), "event_timestamp": [now] * len(drivers)}
    )
    rows = client.get_historical_features(refs, entity_rows).to_arrow().to_pylist()
    return [[row[f"{ref.replace(':', '__')}"] for ref in refs] for row in rows]


def _sleep_until(moment: datetime) -> None:
    time.sleep(max(0.0, (moment - datetime.now(UTC)).total_seconds()))


def _warning(verb: str, table: str) -> str:
    return (
        f"warning: {verb} max_age of {table}: values that already expired from the online store "
        f"are not restored; run `potluck ingest-online {table} --full` to reload them"
    )


# ---- max_age ------------------------------------------------------------------------------------


def test_max_age_raised_or_removed_keeps_values_the_old_max_age_would_have_expired(
    client: Client,
) -> None:
    """Raised 3 s -> 1 h, and removed: a value written under 3 s still reads 3 s later.

    A value that had expired before the apply is not restored (the plan says so), until
    ``--full`` reloads it.
    """
    raised_v1 = _table(client, "raised", {"trips": ValueType.INT64}, OLD_MAX_AGE)
    removed_v1 = _table(client, "removed", {"trips": ValueType.INT64}, OLD_MAX_AGE)
    client.apply([raised_v1, removed_v1])
    t0 = datetime.now(UTC)
    fresh, early = t0, t0 - timedelta(seconds=1)
    rows = [
        {"driver_id": 1, "event_timestamp": fresh, "trips": 1},
        {"driver_id": 2, "event_timestamp": early, "trips": 2},
    ]
    for table in (raised_v1, removed_v1):
        _ingest(client, table, rows)
        _load(client, table)
    raised_v2 = _table(client, "raised", {"trips": ValueType.INT64}, timedelta(hours=1))
    removed_v2 = _table(client, "removed", {"trips": ValueType.INT64})
    planned = client.apply([raised_v2, removed_v2], dry_run=True)
    assert [c.details for c in planned] == [
        ("max_age 3s -> 1h", _warning("raising", "raised")),
        ("max_age 3s -> none", _warning("removing", "removed")),
    ]
    _sleep_until(early + OLD_MAX_AGE + timedelta(milliseconds=100))
    client.apply([raised_v2, removed_v2])
    _sleep_until(fresh + OLD_MAX_AGE + timedelta(milliseconds=200))
    refs = ["raised:trips", "removed:trips"]
    assert _compare(client, refs, [1]) == [
        {"raised__trips": ("PRESENT", 1), "removed__trips": ("PRESENT", 1)}
    ]
    online = client.get_online_features(refs, {"driver_id": [2]})
    assert online.statuses() == {
        "driver_id": ["PRESENT"],
        "raised__trips": ["NOT_FOUND"],
        "removed__trips": ["NOT_FOUND"],
    }
    assert _training(client, refs, [2]) == [[2, 2]]
    for table in (raised_v2, removed_v2):
        _load(client, table, full=True)
    assert _compare(client, refs, [1, 2]) == [
        {"raised__trips": ("PRESENT", 1), "removed__trips": ("PRESENT", 1)},
        {"raised__trips": ("PRESENT", 2), "removed__trips": ("PRESENT", 2)},
    ]


def test_max_age_lowered_withholds_old_values_as_training_does(client: Client) -> None:
    v1 = _table(client, "lowered", {"trips": ValueType.INT64}, timedelta(hours=1))
    client.apply([v1])
    now = datetime.now(UTC)
    _ingest(
        client,
        v1,
        [
            {"driver_id": 1, "event_timestamp": now - timedelta(minutes=10), "trips": 1},
            {"driver_id": 2, "event_timestamp": now - timedelta(minutes=1), "trips": 2},
        ],
    )
    _load(client, v1)
    refs = ["lowered:trips"]
    assert _compare(client, refs, [1, 2, 3]) == [
        {"lowered__trips": ("PRESENT", 1)},
        {"lowered__trips": ("PRESENT", 2)},
        {"lowered__trips": ("NOT_FOUND", None)},
    ]
    v2 = _table(client, "lowered", {"trips": ValueType.INT64}, timedelta(minutes=5))
    (change,) = client.apply([v2])
    assert change.details == ("max_age 1h -> 5m",)
    assert _compare(client, refs, [1, 2, 3]) == [
        {"lowered__trips": ("OUTSIDE_MAX_AGE", None)},
        {"lowered__trips": ("PRESENT", 2)},
        {"lowered__trips": ("NOT_FOUND", None)},
    ]


# ---- types --------------------------------------------------------------------------------------

WIDENINGS = [(a, b) for a in ValueType for b in ValueType if is_lossless_widening(a, b)]
NARROW_VALUES: dict[ValueType, Any] = {
    ValueType.INT32: -(2**31),
    ValueType.FLOAT: 0.1,
    ValueType.STRING: "naïve ☕",
    ValueType.INT32_LIST: [2**31 - 1, None, -1],
    ValueType.FLOAT_LIST: [1.5, None, 0.1],
    ValueType.STRING_LIST: ["a", None, ""],
}
FLOAT32_TENTH = float(pa.scalar(0.1, pa.float32()).as_py())
WIDE_VALUES: dict[tuple[ValueType, ValueType], Any] = {
    (ValueType.INT32, ValueType.INT64): -(2**31),
    (ValueType.INT32, ValueType.DOUBLE): -(2.0**31),
    (ValueType.FLOAT, ValueType.DOUBLE): FLOAT32_TENTH,
    (ValueType.STRING, ValueType.BYTES): "naïve ☕".encode(),
    (ValueType.INT32_LIST, ValueType.INT64_LIST): [2**31 - 1, None, -1],
    (ValueType.INT32_LIST, ValueType.DOUBLE_LIST): [2.0**31 - 1, None, -1.0],
    (ValueType.FLOAT_LIST, ValueType.DOUBLE_LIST): [1.5, None, FLOAT32_TENTH],
    (ValueType.STRING_LIST, ValueType.BYTES_LIST): [b"a", None, b""],
}


def _name(pair: tuple[ValueType, ValueType]) -> str:
    return f"{pair[0].name.lower()}_to_{pair[1].name.lower()}"


def test_the_widenings_are_the_ones_listed() -> None:
    assert set(WIDE_VALUES) == set(WIDENINGS)


def test_every_lossless_widening_is_followed_without_reloading(client: Client) -> None:
    """Values stored before a forced widening read as the wider type, as training sets do."""
    v1 = _table(client, "widened", {_name(p): p[0] for p in WIDENINGS})
    client.apply([v1])
    now = datetime.now(UTC)
    values = {_name(p): NARROW_VALUES[p[0]] for p in WIDENINGS}
    _ingest(
        client,
        v1,
        [
            {"driver_id": 1, "event_timestamp": now - timedelta(minutes=1), **values},
            {"driver_id": 2, "event_timestamp": now - timedelta(minutes=1)},
        ],
    )
    _load(client, v1)
    v2 = _table(client, "widened", {_name(p): p[1] for p in WIDENINGS})
    (change,) = client.apply([v2], force=True)
    assert change.details == tuple(
        f"~ feature {_name(p)} {p[0].name} -> {p[1].name} (forced)" for p in WIDENINGS
    )
    refs = [f"widened:{_name(p)}" for p in WIDENINGS]
    assert _compare(client, refs, [1, 2]) == [
        {f"widened__{_name(p)}": ("PRESENT", WIDE_VALUES[p]) for p in WIDENINGS},
        {f"widened__{_name(p)}": ("NULL_VALUE", None) for p in WIDENINGS},
    ]
    job = client.start_offline_to_online_ingestion("widened").wait()
    assert (job.stats.rows_written, job.stats.rows_skipped) == (0, 2)


def test_a_forced_change_that_is_not_a_widening_is_warned_and_repaired_by_full(
    client: Client,
) -> None:
    """INT64 -> INT32: stored values read NULL_VALUE (the plan says so); --full repairs them."""
    v1 = _table(client, "narrowed", {"trips": ValueType.INT64})
    client.apply([v1])
    now = datetime.now(UTC)
    row = {"driver_id": 1, "event_timestamp": now - timedelta(minutes=1), "trips": 7}
    _ingest(client, v1, [row])
    _load(client, v1)
    v2 = _table(client, "narrowed", {"trips": ValueType.INT32})
    (change,) = client.apply([v2], force=True)
    assert change.details == (
        "~ feature trips INT64 -> INT32 (forced)",
        "warning: feature trips of narrowed changes type INT64 -> INT32, which is not a lossless "
        "widening: values stored online as INT64 read as NULL_VALUE; run "
        "`potluck ingest-online narrowed --full` to reload them",
    )
    online = client.get_online_features(["narrowed:trips"], {"driver_id": [1]})
    assert online.statuses()["narrowed__trips"] == ["NULL_VALUE"]
    assert _training(client, ["narrowed:trips"], [1]) == [[7]]
    again = client.start_offline_to_online_ingestion("narrowed").wait()
    assert (again.stats.rows_written, again.stats.rows_skipped) == (0, 1)
    full = client.start_offline_to_online_ingestion("narrowed", full=True).wait()
    assert (full.stats.rows_written, full.stats.rows_skipped) == (1, 0)
    assert _compare(client, ["narrowed:trips"], [1]) == [{"narrowed__trips": ("PRESENT", 7)}]


# ---- features -----------------------------------------------------------------------------------


def test_added_archived_and_restored_features_agree(client: Client) -> None:
    """Added: old rows read NULL_VALUE (training: null). Archived: neither side serves it.
    Restored with its type: the stored values come back on both sides."""
    v1 = _table(client, "evolving", {"a": ValueType.INT64, "b": ValueType.STRING})
    client.apply([v1])
    now = datetime.now(UTC)
    old_event = now - timedelta(minutes=2)
    _ingest(client, v1, [{"driver_id": 1, "event_timestamp": old_event, "a": 1, "b": "x"}])
    _load(client, v1)

    added = _table(
        client, "evolving", {"a": ValueType.INT64, "b": ValueType.STRING, "c": ValueType.DOUBLE}
    )
    (change,) = client.apply([added])
    assert change.details == ("+ feature c DOUBLE",)
    refs = ["evolving:a", "evolving:b", "evolving:c"]
    assert _compare(client, refs, [1]) == [
        {
            "evolving__a": ("PRESENT", 1),
            "evolving__b": ("PRESENT", "x"),
            "evolving__c": ("NULL_VALUE", None),
        }
    ]
    new_event = now - timedelta(minutes=1)
    _ingest(
        client, added, [{"driver_id": 2, "event_timestamp": new_event, "a": 2, "b": "y", "c": 0.5}]
    )
    _load(client, added)
    assert _compare(client, refs, [2]) == [
        {
            "evolving__a": ("PRESENT", 2),
            "evolving__b": ("PRESENT", "y"),
            "evolving__c": ("PRESENT", 0.5),
        }
    ]

    archived = _table(client, "evolving", {"a": ValueType.INT64, "c": ValueType.DOUBLE})
    (change,) = client.apply([archived])
    assert change.details == ("- feature b (archived)",)
    assert _compare(client, ["evolving:a", "evolving:c"], [1, 2]) == [
        {"evolving__a": ("PRESENT", 1), "evolving__c": ("NULL_VALUE", None)},
        {"evolving__a": ("PRESENT", 2), "evolving__c": ("PRESENT", 0.5)},
    ]
    with pytest.raises(FeatureRefError):
        client.get_online_features(["evolving:b"], {"driver_id": [1]})
    with pytest.raises(FeatureRefError):
        _training(client, ["evolving:b"], [1])

    (change,) = client.apply([added])
    assert change.details == ("+ feature b STRING (restored from archive)",)
    assert _compare(client, refs, [1, 2]) == [
        {
            "evolving__a": ("PRESENT", 1),
            "evolving__b": ("PRESENT", "x"),
            "evolving__c": ("NULL_VALUE", None),
        },
        {
            "evolving__a": ("PRESENT", 2),
            "evolving__b": ("PRESENT", "y"),
            "evolving__c": ("PRESENT", 0.5),
        },
    ]


# ---- the commands -------------------------------------------------------------------------------


def test_cli_plan_warns_full_reloads_and_purge_removes(client: Client, tmp_path: Path) -> None:
    """`potluck plan` shows the warning, `ingest-online --full` rewrites, `online purge` counts."""
    v1 = _table(client, "cli_stats", {"trips": ValueType.INT64}, timedelta(hours=1))
    client.apply([v1])
    now = datetime.now(UTC)
    _ingest(
        client,
        v1,
        [
            {"driver_id": i, "event_timestamp": now - timedelta(minutes=1), "trips": i}
            for i in range(5)
        ],
    )
    _load(client, v1)
    definitions = tmp_path / "defs.yaml"
    spec = {
        "entities": [{"name": "driver_id", "value_type": "INT64"}],
        "feature_tables": [
            {
                "name": "cli_stats",
                "entities": ["driver_id"],
                "features": [{"name": "trips", "value_type": "INT64"}],
                "max_age": "2h",
                "batch_source": {
                    "path": str(tmp_path / "data" / "cli_stats"),
                    "event_timestamp_column": "event_timestamp",
                    "created_timestamp_column": "created",
                },
            }
        ],
    }
    definitions.write_text(yaml.safe_dump(spec))
    base = ["--config", str(tmp_path / "potluck.yaml")]
    runner = CliRunner()
    result = runner.invoke(app, [*base, "plan", "-f", str(definitions), "--output", "json"])
    assert result.exit_code == 0, result.output
    assert [c for c in yaml.safe_load(result.stdout) if c["name"] == "cli_stats"] == [
        {
            "kind": "feature_table",
            "name": "cli_stats",
            "action": "update",
            "revision": 2,
            "details": ["max_age 1h -> 2h", _warning("raising", "cli_stats")],
        }
    ]
    result = runner.invoke(app, [*base, "apply", "-f", str(definitions)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, [*base, "ingest-online", "cli_stats", "--full"])
    assert result.exit_code == 0, result.output
    assert result.stdout.endswith(": 5 rows read, 5 written, 0 skipped, 0 rejected\n")
    result = runner.invoke(app, [*base, "ingest-online", "cli_stats", "--full", "--since-last"])
    assert result.exit_code == 2
    assert result.stderr == (
        "error: --full cannot be combined with --since-last: a full reload reads every row of "
        "the batch source (within --start and --end); drop one of them\n"
    )
    purge = [*base, "online", "purge", "cli_stats", "--output", "json"]
    result = runner.invoke(app, purge, input="n\n")
    assert result.exit_code == 1
    result = runner.invoke(app, [*purge, "--yes"])
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(result.stdout) == {
        "project": client.project,
        "table": "cli_stats",
        "removed": 5,
    }
    result = runner.invoke(app, [*base, "online", "purge", "cli_stats", "-y"])
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        f"purged 0 entity keys of feature table 'cli_stats' (project '{client.project}') from the "
        "online store\n"
    )
    statuses = client.get_online_features(["cli_stats:trips"], {"driver_id": [1]}).statuses()
    assert statuses["cli_stats__trips"] == ["NOT_FOUND"]
    result = runner.invoke(app, [*base, "online", "purge", "nope", "-y"])
    assert result.exit_code == 2
    assert "nope" in result.stderr
