"""A Spark stream task's online write when the store goes away: retried for a window, then failed.

The task's body (``_handle``, what each Kafka partition's task runs inside ``foreachBatch``) is
called here in-process against a redis-server of the test's own, stopped and started again: a
Spark application would add minutes and prove nothing more about the retry.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pytest
from _stream_support import DRIVER, RedisServer, stats_table

from potluck import plugins
from potluck.errors import UnavailableError
from potluck.ingestion.stream.batch import StreamTable
from potluck.online.base import OnlineStore

stream_to_online = pytest.importorskip("potluck.ingestion.spark_jobs.stream_to_online")

pytestmark = [pytest.mark.redis]

EVENT = datetime.now(timezone.utc).replace(microsecond=0)


def raw(keys: list[int]) -> pa.Table:
    values = [
        json.dumps(
            {
                "driver_id": k,
                "trips": k * 10,
                "conv_rate": 0.5,
                "event_timestamp": EVENT.isoformat(),
            }
        ).encode()
        for k in keys
    ]
    n = len(keys)
    return pa.table(
        {
            "key": pa.nulls(n, pa.binary()),
            "value": pa.array(values, pa.binary()),
            "topic": pa.array(["events"] * n),
            "partition": pa.array([0] * n, pa.int32()),
            "offset": pa.array(range(n), pa.int64()),
            "timestamp": pa.array([1_000] * n, pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
        }
    )


def test_a_task_rides_out_a_short_store_outage_and_fails_once_its_window_is_spent(
    tmp_path: Path,
) -> None:
    server = RedisServer(tmp_path)
    server.start()
    try:
        stream = StreamTable(
            "p", stats_table("127.0.0.1:9", "events"), {"driver_id": DRIVER.value_type}
        )
        config = {"type": "redis", "url": server.url}
        store: OnlineStore = plugins.create(plugins.ONLINE_STORES, config)
        store.ensure_table("p", stream.table)
        store.close()

        server.shutdown()
        back = threading.Timer(1.5, server.start)
        back.start()
        started = time.monotonic()
        counts = stream_to_online._handle(
            raw([1, 2, 3]), stream, config, None, {}, retry_seconds=60
        )
        back.join()
        assert time.monotonic() - started >= 1.5  # it waited for the store, then wrote
        assert counts.to_pylist() == [
            {
                "rows_read": 3,
                "rows_written": 3,
                "rows_skipped": 0,
                "rows_rejected": 0,
                "bad_messages": "{}",
                "max_event_us": int(EVENT.timestamp() * 1_000_000),
            }
        ]

        server.shutdown()
        started = time.monotonic()
        with pytest.raises(UnavailableError) as caught:
            stream_to_online._handle(raw([4]), stream, config, None, {}, retry_seconds=1.0)
        assert 1.0 <= time.monotonic() - started < 10.0
        assert caught.value.message.startswith(
            f"online store Redis at 127.0.0.1:{server.port} is unavailable"
        )
    finally:
        server.stop()
