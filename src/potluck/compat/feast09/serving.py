"""``GetOnlineFeaturesV2`` of ``feast.serving.ServingService`` (Feast 0.9) over a ServingService.

The request's entity rows (maps of ``Value``) become potluck's columnar entities, its
``FeatureReferenceV2`` list becomes ``project/table:feature`` references (an empty ``project``
is the server's own), and :meth:`ServingService.get_online_features` answers; each row of the
answer becomes one ``FieldValues``: the entity fields with ``PRESENT``, then ``table:feature``
with its value and status (``NOT_FOUND``, ``OUTSIDE_MAX_AGE`` and ``NULL_VALUE`` carry an empty
``Value``). Values are encoded by the columnar method's own code (``serving/_values.py``), so both
methods send a value the same way.

Errors are the columnar method's, with its statuses (``serving.grpc.STATUS_BY_CODE``). One
differs from Feast 0.9: a feature its table does not have is ``INVALID_ARGUMENT`` naming it,
where Feast 0.9 answered ``NOT_FOUND`` for that field.

``GetFeastServingInfo`` of the same service is potluck's own servicer's (``serving/grpc.py``);
Feast 0.9's SDK reads only its ``version``.
"""

from __future__ import annotations

import time
from typing import Any

import grpc

from potluck._proto.feast.serving import OnlineFeaturesV2_pb2 as v2_pb
from potluck._proto.feast.serving.ServingService_pb2 import FieldStatus
from potluck.compat.feast09._calls import rpc, unary
from potluck.errors import PotluckError, ValidationError
from potluck.serving._values import from_values, response_to_proto
from potluck.serving.grpc import STATUS_BY_CODE
from potluck.serving.metrics import ServingMetrics
from potluck.serving.service import ServingService, entity_columns
from potluck.serving.status import PRESENT

SERVICE_NAME = "feast.serving.ServingService"
"""The service the method belongs to, beside potluck's ``GetOnlineFeatures``."""

METHOD = "GetOnlineFeaturesV2"

ENDPOINT = f"grpc:{METHOD}"
"""The method's ``endpoint`` label in the serving metrics."""


def add_serving_service(
    server: grpc.Server, service: ServingService, metrics: ServingMetrics
) -> None:
    """Serve ``GetOnlineFeaturesV2`` from ``service`` on ``server``, recording into ``metrics``.

    Pass it to :func:`potluck.serving.server.start_serving` (``services``), so that Feast 0.9's
    SDK can use potluck's Online Serving as its ``serving_url``.
    """
    servicer = _OnlineFeaturesV2(service, metrics)
    handler = unary(
        servicer,
        v2_pb.GetOnlineFeaturesRequestV2,
        v2_pb.GetOnlineFeaturesResponseV2,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE_NAME, {METHOD: handler}),)
    )


def _status(error: PotluckError) -> grpc.StatusCode:
    return STATUS_BY_CODE.get(error.code, grpc.StatusCode.INTERNAL)


def _count(servicer: _OnlineFeaturesV2, error: PotluckError) -> None:
    servicer.metrics.error(ENDPOINT, error.code)


class _OnlineFeaturesV2:
    def __init__(self, service: ServingService, metrics: ServingMetrics) -> None:
        self.service = service
        self.metrics = metrics
        self._latency = metrics.latency(ENDPOINT)

    def __call__(
        self, request: v2_pb.GetOnlineFeaturesRequestV2, context: grpc.ServicerContext
    ) -> v2_pb.GetOnlineFeaturesResponseV2:
        """Answer Feast 0.9's row-shaped online read; its latency is recorded, errors too."""
        start = time.perf_counter()
        try:
            return self.GetOnlineFeaturesV2(request, context)
        finally:
            self._latency.observe(time.perf_counter() - start)

    @rpc(_status, on_error=_count)
    def GetOnlineFeaturesV2(  # noqa: N802
        self, request: v2_pb.GetOnlineFeaturesRequestV2
    ) -> v2_pb.GetOnlineFeaturesResponseV2:
        keys, refs = _references(request)
        entities = entity_columns(
            [_row(i, row.fields) for i, row in enumerate(request.entity_rows)]
        )
        response = self.service.get_online_features(refs, entities, full_feature_names=True)
        columns = response_to_proto(response).results
        names = [*entities, *keys]
        out = v2_pb.GetOnlineFeaturesResponseV2()
        width = len(entities)
        for row in range(len(response)):
            values = out.field_values.add()
            for index, name in enumerate(names):
                values.fields[name].CopyFrom(columns[index].values[row])
                status = PRESENT if index < width else response.field_statuses[index][row]
                values.statuses[name] = FieldStatus.ValueType(int(status))
        return out


def _references(request: v2_pb.GetOnlineFeaturesRequestV2) -> tuple[list[str], list[str]]:
    """Return the response keys (``table:feature``) and potluck references of the request."""
    if not request.features:
        raise ValidationError(
            "the request names no features; list them as feature_table:feature",
            field="features",
        )
    keys: list[str] = []
    refs: list[str] = []
    prefix = f"{request.project}/" if request.project else ""
    for index, ref in enumerate(request.features):
        key = f"{ref.feature_table}:{ref.name}"
        if not ref.feature_table or not ref.name or ref.name == "*":
            raise ValidationError(
                f"features[{index}]: {key!r} is not a feature reference; Feast 0.9 references "
                "name a feature table and one of its features (feature_table:feature)",
                field="features",
                ref=key,
            )
        keys.append(key)
        refs.append(prefix + key)
    return keys, refs


def _row(index: int, fields: Any) -> dict[str, Any]:
    """Return one entity row's Python values, or raise naming the row and the entity."""
    if not fields:
        raise ValidationError(
            f"entity row {index} has no fields; give each row its entities' values, such as "
            "{'driver_id': 1001}",
            field="entity_rows",
            row=index,
        )
    row = {}
    for name, value in fields.items():
        try:
            (row[name],) = from_values([value])
        except (OverflowError, OSError, ValueError):
            raise ValidationError(
                f"entity row {index}: {name!r} holds a timestamp outside the years 1 to 9999",
                field="entity_rows",
                entity=name,
                row=index,
            ) from None
    return row


__all__ = ["ENDPOINT", "METHOD", "SERVICE_NAME", "add_serving_service"]
