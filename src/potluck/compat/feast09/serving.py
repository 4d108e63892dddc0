"""``GetOnlineFeaturesV2`` of ``feast.serving.ServingService`` (Feast 0.9) over a ServingService.

The request's entity rows (maps of ``Value``) become potluck's columnar entities, its
``FeatureReferenceV2`` list becomes ``project/table:feature`` references (an empty ``project``
is the server's own), and :meth:`ServingService.get_online_features` answers; each row of the
answer becomes one ``FieldValues``: the entity fields with ``PRESENT``, then ``table:feature``
with its value and status (``NOT_FOUND``, ``OUTSIDE_MAX_AGE`` and ``NULL_VALUE`` carry an empty
``Value``). Values are encoded by the columnar method's own code (``serving/_values.py``), so both
methods send a value the same way.

As in Feast 0.9, a feature its (known) table does not have is no error: the call answers OK
and that field is ``NOT_FOUND`` with an empty ``Value`` in every row. Which features a table has
comes from the service's cached read plan of every requested table (``table:*``), asked for only
when the columnar read refused a reference. Other errors are the columnar method's, with its
statuses (``serving.grpc.STATUS_BY_CODE``): an unknown table is ``INVALID_ARGUMENT`` naming it.

``GetFeastServingInfo`` of the same service is potluck's own servicer's (``serving/grpc.py``);
Feast 0.9's SDK reads only its ``version``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import grpc

from potluck._proto.feast.serving import OnlineFeaturesV2_pb2 as v2_pb
from potluck._proto.feast.serving.ServingService_pb2 import FieldStatus
from potluck.compat.feast09._calls import rpc, unary
from potluck.definitions.feature_table import FeatureTable
from potluck.definitions.refs import FeatureRef
from potluck.errors import FeatureRefError, PotluckError, ValidationError
from potluck.serving._values import from_values, response_to_proto
from potluck.serving.grpc import STATUS_BY_CODE
from potluck.serving.metrics import ServingMetrics
from potluck.serving.response import OnlineResponse
from potluck.serving.service import ServingService, entity_columns

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
        keys, requested = _references(request)
        entities = entity_columns(
            [_row(i, row.fields) for i, row in enumerate(request.entity_rows)]
        )
        refs = requested
        response: OnlineResponse | None
        try:
            response = self.service.get_online_features(refs, entities, full_feature_names=True)
        except FeatureRefError as refused:
            refs = self._known(refs, list(entities), refused)
            response = self._read(refs, entities)
        columns = [] if response is None else response_to_proto(response).results
        column_of = {ref: len(entities) + i for i, ref in enumerate(refs)}
        out = v2_pb.GetOnlineFeaturesResponseV2()
        for entity_row in request.entity_rows:
            values = out.field_values.add()
            for name in entities:
                values.fields[name].CopyFrom(entity_row.fields[name])
                values.statuses[name] = FieldStatus.PRESENT
        for key, ref in zip(keys, requested, strict=True):
            index = column_of.get(ref)
            for row, values in enumerate(out.field_values):
                if response is None or index is None:  # a feature its table does not have
                    values.fields[key].Clear()
                    values.statuses[key] = FieldStatus.NOT_FOUND
                else:
                    values.fields[key].CopyFrom(columns[index].values[row])
                    status = response.field_statuses[index][row]
                    values.statuses[key] = FieldStatus.ValueType(int(status))
        return out

    def _read(
        self, refs: list[str], entities: Mapping[str, Sequence[Any]]
    ) -> OnlineResponse | None:
        """Read ``refs`` (``None`` when none is left to read)."""
        if not refs:
            return None
        return self.service.get_online_features(refs, entities, full_feature_names=True)

    def _known(self, refs: list[str], entities: list[str], refused: FeatureRefError) -> list[str]:
        """Return ``refs`` without the features their (known) tables do not have.

        Raises:
            FeatureRefError: ``refused`` when a table is unknown, or no reference names a
                missing feature (the refusal was for another reason).
        """
        try:
            tables = dict.fromkeys(_table_wildcard(ref) for ref in refs)
            plan = self.service.plan(list(tables), entities, full_feature_names=True)
        except PotluckError:
            raise refused from None
        names = {name for read in plan.reads for name in _columns(read.table)}
        known = [ref for ref in refs if _column(ref) in names]
        if len(known) == len(refs):
            raise refused
        return known


def _table_wildcard(ref: str) -> str:
    """Return the reference to every feature of ``ref``'s table: ``[project/]table:*``."""
    parsed = FeatureRef.parse(ref)
    prefix = f"{parsed.project}/" if parsed.project else ""
    return f"{prefix}{parsed.table}:*"


def _column(ref: str) -> str:
    """Return the response column of ``ref`` (full feature names: ``table__feature``)."""
    parsed = FeatureRef.parse(ref)
    return f"{parsed.table}__{parsed.feature}"


def _columns(table: FeatureTable) -> list[str]:
    return [f"{table.name}__{name}" for name in table.feature_names]


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
