"""Feast 0.9's own SDK (feast==0.9.5.2) with its authentication on, against potluck's servers.

Run by tests/feast09/test_sdk_auth.py with the Python of the separate Feast venv
(scripts/feast09_venv.sh), never imported by pytest: it reads one JSON instruction from stdin
({"core", "serving", "jobservice": host:port, "ca_file": PEM path, "token_url": the OAuth token
endpoint, "audience", "clients": {name: [id, secret]}, "static_token", "data": folder, "now": iso
time (naive UTC)}), runs each caller's calls with the SDK's public API only, and prints what the
SDK returned or raised as one JSON document on stdout.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime, timedelta
from typing import Any

import grpc
import pandas as pd
from feast import Client, Entity, Feature, FeatureTable, FileSource, ValueType
from feast.data_format import ParquetFormat
from feast.pyspark.abc import SparkJobStatus


def _error(call: Any) -> dict[str, Any]:
    """Run ``call``; return the error the SDK raises as a user sees it (type, code, text)."""
    try:
        call()
    except grpc.RpcError as exc:
        # Most calls re-raise grpc.RpcError(details); a few let the call's own error through.
        code = getattr(exc, "code", None)
        details = getattr(exc, "details", None)
        return {
            "type": "RpcError",
            "code": code().name if callable(code) else None,
            "text": str(details() if callable(details) else exc),
        }
    except RuntimeError as exc:
        return {"type": "RuntimeError", "code": None, "text": str(exc)}
    raise AssertionError("the call did not fail")


def _client(order: dict[str, Any], **auth: Any) -> Client:
    """A client of the three servers over TLS trusting the test's CA, with ``auth`` options."""
    ca = order["ca_file"]
    return Client(
        core_url=order["core"],
        serving_url=order["serving"],
        job_service_url=order["jobservice"],
        core_enable_ssl=True,
        serving_enable_ssl=True,
        job_service_enable_ssl=True,
        core_server_ssl_cert=ca,
        serving_server_ssl_cert=ca,
        job_service_server_ssl_cert=ca,
        telemetry=False,
        **auth,
    )


def _oauth(order: dict[str, Any], name: str, secret: str | None = None) -> dict[str, str]:
    """Feast 0.9's client-credentials options for client ``name`` of the token endpoint."""
    client_id, client_secret = order["clients"][name]
    return {
        "enable_auth": True,
        "auth_provider": "oauth",
        "oauth_grant_type": "client_credentials",
        "oauth_client_id": client_id,
        "oauth_client_secret": secret or client_secret,
        "oauth_audience": order["audience"],
        "oauth_token_request_url": order["token_url"],
    }


def _table(data: str) -> FeatureTable:
    return FeatureTable(
        name="driver_stats",
        entities=["driver_id"],
        features=[Feature("trips", ValueType.INT64)],
        batch_source=FileSource(
            file_format=ParquetFormat(),
            file_url=f"file://{data}/driver_stats",
            event_timestamp_column="event_timestamp",
            created_timestamp_column="created",
        ),
    )


def _wait(job: Any, timeout: float = 60.0) -> str:
    """Poll the job's status through the SDK (GetJob) until it ends; return its name."""
    deadline = time.monotonic() + timeout
    ended = {SparkJobStatus.COMPLETED, SparkJobStatus.FAILED}
    while True:
        status = job.get_status()
        if status in ended or time.monotonic() > deadline:
            return str(status.name)
        time.sleep(0.2)


def flow(order: dict[str, Any]) -> dict[str, Any]:
    now = datetime.fromisoformat(order["now"])
    driver = Entity(name="driver_id", value_type=ValueType.INT64, description="a driver")
    stats = _table(order["data"])
    rows = [{"driver_id": 1}, {"driver_id": 2}]
    out: dict[str, Any] = {}

    anonymous = _client(order)
    out["anonymous"] = {
        "list_projects": _error(anonymous.list_projects),
        "apply": _error(lambda: anonymous.apply(driver)),
        "get_online_features": _error(
            lambda: anonymous.get_online_features(["driver_stats:trips"], rows)
        ),
    }
    out["bad_secret"] = _error(lambda: _client(order, **_oauth(order, "writer", secret="nope")))

    writer = _client(order, **_oauth(order, "writer"))
    writer.apply([driver, stats])
    writer.ingest(
        "driver_stats",
        pd.DataFrame(
            {
                "driver_id": [1, 2],
                "event_timestamp": [now - timedelta(minutes=10), now - timedelta(minutes=1)],
                "created": [now, now],
                "trips": [3, 4],
            }
        ),
    )
    job = writer.start_offline_to_online_ingestion(
        stats, now - timedelta(days=1), now + timedelta(minutes=1)
    )
    out["writer"] = {
        "tables": [t.name for t in writer.list_feature_tables()],
        "job_status": _wait(job),
        "jobs": [j.get_id() for j in writer.list_jobs(include_terminated=True)],
        "job_id": job.get_id(),
        "online": writer.get_online_features(["driver_stats:trips"], rows).to_dict(),
    }

    reader = _client(order, **_oauth(order, "reader"))
    out["reader"] = {
        "tables": [t.name for t in reader.list_feature_tables()],
        "online": reader.get_online_features(["driver_stats:trips"], rows).to_dict(),
        "apply": _error(lambda: reader.apply(driver)),
        "start_job": _error(
            lambda: reader.start_offline_to_online_ingestion(
                stats, now - timedelta(days=1), now + timedelta(minutes=1)
            )
        ),
    }

    static = _client(
        order, enable_auth=True, auth_provider="oauth", auth_token=order["static_token"]
    )
    out["static"] = {"entities": [e.name for e in static.list_entities()]}
    return out


def main() -> None:
    json.dump(flow(json.load(sys.stdin)), sys.stdout, default=str)


if __name__ == "__main__":
    main()
