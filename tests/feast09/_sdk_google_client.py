"""Feast 0.9's SDK with ``auth_provider="google"``, against potluck's servers (no internet).

Run by tests/feast09/test_sdk_google_auth.py with the Python of the separate Feast venv, never
imported by pytest. It reads one JSON instruction from stdin ({"core", "jobservice": host:port,
"ca_file": PEM path, "credentials": {name: service-account JSON path}}) and, for each
service account, points ``GOOGLE_APPLICATION_CREDENTIALS`` at its file, builds a client the way
a Feast 0.9 user does (``enable_auth``, ``auth_provider="google"``, TLS) and lists projects,
feature tables and jobs; it prints what each call returned or raised as one JSON document.
The environment (set by the test) routes https://www.googleapis.com through the test's proxy.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any

import grpc
from feast import Client


def _outcome(call: Callable[[], Any]) -> Any:
    """Return what ``call`` returned, or the error the SDK raised as a user sees it."""
    try:
        return call()
    except grpc.RpcError as exc:
        code = getattr(exc, "code", None)
        details = getattr(exc, "details", None)
        return {
            "error": code().name if callable(code) else None,
            "text": str(details() if callable(details) else exc),
        }


def _calls(order: dict[str, Any]) -> dict[str, Any]:
    ca = order["ca_file"]
    client = Client(
        core_url=order["core"],
        job_service_url=order["jobservice"],
        core_enable_ssl=True,
        job_service_enable_ssl=True,
        core_server_ssl_cert=ca,
        job_service_server_ssl_cert=ca,
        enable_auth=True,
        auth_provider="google",
        telemetry=False,
    )
    return {
        "list_projects": _outcome(client.list_projects),
        "list_feature_tables": _outcome(
            lambda: [t.name for t in client.list_feature_tables(project="default")]
        ),
        "list_jobs": _outcome(lambda: len(client.list_jobs(include_terminated=True))),
    }


def main() -> None:
    order = json.load(sys.stdin)
    out = {}
    for name, path in order["credentials"].items():
        os.environ["GOOGLE_APPLICATION_CREDENTIALS"] = path
        out[name] = _calls(order)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
