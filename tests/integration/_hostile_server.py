"""A serving process of its own, so tests can measure its memory alone while they attack it.

Run as ``python _hostile_server.py DIR MAX_REQUEST_BYTES``: it applies the serving tests'
definitions to a SQLite registry in ``DIR``, writes driver 1 to a SQLite online store there,
serves both on free ports with ``start_serving(max_request_bytes=...)``, prints one JSON line
``{"grpc": PORT, "http": PORT, "project": NAME}`` and serves until its stdin closes.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from _serving_support import (
    CUSTOMER,
    DRIVER,
    DRIVER_STATS,
    PAIR_STATS,
    open_store,
    store_config,
    utc_now,
    write_rows,
)

from potluck.registry.sql import SqlRegistry
from potluck.serving.server import start_serving
from potluck.serving.service import ServingService

PROJECT = "hostile"


def main(directory: Path, max_request_bytes: int) -> None:
    logging.disable(logging.WARNING)  # one line per rejected request: thousands when fuzzed
    registry = SqlRegistry(f"sqlite:///{directory / 'registry.db'}")
    registry.apply(PROJECT, [DRIVER, CUSTOMER, DRIVER_STATS, PAIR_STATS])
    store = open_store(store_config("sqlite", directory, None))
    write_rows(
        store,
        PROJECT,
        DRIVER_STATS,
        [{"driver_id": 1, "conv_rate": 0.5, "trips": 7, "event_timestamp": utc_now()}],
    )
    service = ServingService(registry, store, PROJECT)
    with start_serving(service, max_request_bytes=max_request_bytes) as server:
        print(json.dumps({"grpc": server.grpc_port, "http": server.http_port, "project": PROJECT}))
        sys.stdout.flush()
        sys.stdin.read()
    store.close()
    registry.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]))
