"""Feast 0.9's own SDK (feast==0.9.5.2) running its job flow against potluck's services.

Run by tests/feast09/test_jobs_sdk.py with the Python of the separate Feast venv
(scripts/feast09_venv.sh), never imported by pytest: it reads one JSON instruction from stdin
({"core", "serving", "jobservice": host:port, "data": folder, "now": iso time (naive UTC),
"kafka": host:port, "topic": name}), runs Feast 0.9's documented flow through Core, Serving and
the Job Service with the SDK's public API only, and prints what the SDK returned as one JSON
document on stdout. With {"step": "descriptors"} it prints Feast's JobService.proto as data
(``_describe.py``) instead.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime, timedelta
from typing import Any

import grpc
import pandas as pd
from _describe import describe
from feast import Client, Entity, Feature, FeatureTable, FileSource, KafkaSource, ValueType
from feast.data_format import AvroFormat, ParquetFormat
from feast.pyspark.abc import SparkJob, SparkJobStatus
from feast.serving.ServingService_pb2 import GetOnlineFeaturesResponse

AVRO = json.dumps(
    {
        "type": "record",
        "name": "DriverStats",
        "fields": [
            {"name": "driver_id", "type": "long"},
            {
                "name": "event_timestamp",
                "type": {"type": "long", "logicalType": "timestamp-micros"},
            },
            {"name": "conv_rate", "type": "float"},
            {"name": "trips", "type": "long"},
        ],
    }
)


def _details(call: Any) -> str:
    """Run ``call``; return the text of the error the SDK raises (all a Feast user sees)."""
    try:
        call()
    except grpc.RpcError as exc:
        details = getattr(exc, "details", None)
        return str(details() if callable(details) else exc)
    raise AssertionError("the call did not fail")


def _wait(job: SparkJob, goal: set[SparkJobStatus], timeout: float = 60.0) -> str:
    """Poll the job's status through the SDK until it is one of ``goal``; return its name."""
    deadline = time.monotonic() + timeout
    while True:
        status = job.get_status()
        if status in goal or time.monotonic() > deadline:
            return str(status.name)
        time.sleep(0.2)


def _job(job: SparkJob) -> dict[str, Any]:
    out = {"id": job.get_id(), "type": type(job).__name__, "status": job.get_status().name}
    if hasattr(job, "get_feature_table"):
        out["table"] = job.get_feature_table()
    return out


def _table(data: str, kafka: str, topic: str, name: str = "driver_stats") -> FeatureTable:
    return FeatureTable(
        name=name,
        entities=["driver_id"],
        features=[Feature("conv_rate", ValueType.FLOAT), Feature("trips", ValueType.INT64)],
        batch_source=FileSource(
            file_format=ParquetFormat(),
            file_url=f"file://{data}/{name}",
            event_timestamp_column="event_timestamp",
            created_timestamp_column="created",
        ),
        stream_source=KafkaSource(
            event_timestamp_column="event_timestamp",
            bootstrap_servers=kafka,
            message_format=AvroFormat(AVRO),
            topic=topic,
        ),
    )


def flow(client: Client, order: dict[str, Any]) -> dict[str, Any]:
    now = datetime.fromisoformat(order["now"])
    stats = _table(order["data"], order["kafka"], order["topic"])
    client.apply([Entity(name="driver_id", value_type=ValueType.INT64, description="a driver")])
    client.apply(stats)
    client.ingest(
        "driver_stats",
        pd.DataFrame(
            {
                "driver_id": [1001, 1002],
                "event_timestamp": [now - timedelta(minutes=10), now - timedelta(minutes=1)],
                "created": [now, now],
                "conv_rate": [0.5, 0.25],
                "trips": [3, 4],
            }
        ),
    )
    out: dict[str, Any] = {}

    began = time.monotonic()
    batch = client.start_offline_to_online_ingestion(
        stats, now - timedelta(days=1), now + timedelta(minutes=1)
    )
    out["batch_start_seconds"] = time.monotonic() - began
    out["batch_table"] = batch.get_feature_table()
    out["batch_status"] = _wait(batch, {SparkJobStatus.COMPLETED, SparkJobStatus.FAILED})

    online = client.get_online_features(
        ["driver_stats:conv_rate", "driver_stats:trips", "driver_stats:nope"],
        [{"driver_id": 1001}, {"driver_id": 1002}, {"driver_id": 1003}],
    )
    out["online"] = online.to_dict()
    out["online_statuses"] = [
        {name: GetOnlineFeaturesResponse.FieldStatus.Name(s) for name, s in row.statuses.items()}
        for row in online.field_values
    ]

    retrieval = client.get_historical_features(
        ["driver_stats:conv_rate", "driver_stats:trips"],
        pd.DataFrame(
            {
                "driver_id": [1001, 1002, 1003, 1001],
                "event_timestamp": [now, now, now, now - timedelta(minutes=5)],
            }
        ),
    )
    out["output_uri"] = retrieval.get_output_file_uri()
    out["retrieval_status"] = retrieval.get_status().name

    stream = client.start_stream_to_online_ingestion(stats)
    out["stream_table"] = stream.get_feature_table()
    out["stream_running"] = _wait(stream, {SparkJobStatus.IN_PROGRESS, SparkJobStatus.FAILED})
    out["unterminated"] = [_job(j) for j in client.list_jobs(include_terminated=False)]
    stream.cancel()
    out["stream_cancelled"] = _wait(stream, {SparkJobStatus.FAILED, SparkJobStatus.COMPLETED})
    out["unterminated_after_cancel"] = [_job(j) for j in client.list_jobs(include_terminated=False)]
    out["jobs"] = [_job(j) for j in client.list_jobs(include_terminated=True)]
    out["jobs_of_table"] = [
        j.get_id() for j in client.list_jobs(include_terminated=True, table_name="driver_stats")
    ]
    out["by_id"] = {
        "batch": _job(client.get_job_by_id(batch.get_id())),
        "retrieval": _job(client.get_job_by_id(retrieval.get_id())),
        "retrieval_uri": client.get_job_by_id(retrieval.get_id()).get_output_file_uri(),
        "stream": _job(client.get_job_by_id(stream.get_id())),
    }
    out["ids"] = {
        "batch": batch.get_id(),
        "retrieval": retrieval.get_id(),
        "stream": stream.get_id(),
    }

    missing = _table(order["data"], order["kafka"], order["topic"], name="missing")
    out["errors"] = {
        "unknown_table": _details(
            lambda: client.start_offline_to_online_ingestion(missing, now - timedelta(days=1), now)
        ),
        "unknown_stream_table": _details(lambda: client.start_stream_to_online_ingestion(missing)),
        "unknown_job": _details(lambda: client.get_job_by_id("no-such-job")),
        "unknown_feature": _details(
            lambda: client.get_historical_features(
                ["driver_stats:nope"], pd.DataFrame({"driver_id": [1], "event_timestamp": [now]})
            )
        ),
    }
    return out


def descriptors() -> dict[str, Any]:
    """JobService.proto's messages (field: [number, type]), enums and methods, as Feast has them."""
    from feast.core import JobService_pb2

    return describe(JobService_pb2.DESCRIPTOR)


def main() -> None:
    order = json.load(sys.stdin)
    if order.get("step") == "descriptors":
        json.dump(descriptors(), sys.stdout)
        return
    client = Client(
        core_url=order["core"],
        serving_url=order["serving"],
        job_service_url=order["jobservice"],
        spark_staging_location=f"file://{order['data']}/staging",
        historical_feature_output_location=f"file://{order['data']}/output",
        telemetry=False,
    )
    json.dump(flow(client, order), sys.stdout, default=str)


if __name__ == "__main__":
    main()
