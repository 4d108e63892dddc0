"""``feast.core.CoreService`` (Feast 0.9) over a potluck :class:`Registry`.

Each RPC maps its request to one or two registry calls through ``definitions.py`` and maps the
result back; the registry keeps its own rules (idempotent applies, revisions, changes that need
``force`` are refused, archived projects are read-only). An empty ``project`` means ``default``,
Feast 0.9's default project. Errors end the call as ``_calls.py`` says, with the statuses of
potluck's own Core service (``registry/_errors.py``): a definition potluck cannot express is
``INVALID_ARGUMENT``, an unknown object ``NOT_FOUND``, an empty required field (a name)
``INVALID_ARGUMENT`` naming it.

Feast 0.9 requires every feature table to have a batch source (its SDK cannot parse a table
without one, and fails a whole listing on it): ``ApplyFeatureTable`` refuses a spec without
``batch_source``, and a table potluck holds without one (stream-only, applied through potluck's
own API) is left out of ``ListFeatureTables`` (logged) and is ``NOT_FOUND`` to
``GetFeatureTable``; ``ListFeatures`` still lists its features, which ``GetOnlineFeaturesV2``
serves.
"""

from __future__ import annotations

import logging
from importlib.metadata import version
from typing import cast

import grpc

from potluck._proto.feast.core import CoreService_pb2 as pb
from potluck._proto.feast.core import CoreService_pb2_grpc as pb_grpc
from potluck.compat.feast09._calls import required, rpc
from potluck.compat.feast09.definitions import (
    entity_from_feast,
    entity_to_feast,
    feature_table_from_feast,
    feature_table_to_feast,
    feature_to_feast,
)
from potluck.definitions.entity import Entity
from potluck.definitions.feature_table import FeatureTable
from potluck.definitions.serde import KIND_ENTITY, KIND_FEATURE_TABLE
from potluck.errors import DefinitionError, NotFoundError
from potluck.registry._errors import status_for
from potluck.registry.base import Registry

SERVICE_NAME = "feast.core.CoreService"
"""The fully qualified gRPC service name."""

DEFAULT_PROJECT = "default"
"""The project an empty ``project`` field means, as in Feast 0.9."""

_call = rpc(status_for)

_log = logging.getLogger(__name__)


def add_core_service(server: grpc.Server, registry: Registry) -> None:
    """Serve ``feast.core.CoreService`` from ``registry`` on ``server`` (before it starts).

    Pass it to :func:`potluck.registry.server.start_core_server` (``services``), so that
    Feast 0.9's SDK can use potluck's Core service as its ``core_url``.
    """
    pb_grpc.add_CoreServiceServicer_to_server(_CoreServicer(registry), server)


def _project(name: str) -> str:
    return name or DEFAULT_PROJECT


class _CoreServicer:
    """The CoreService methods, as the generated ``add_CoreServiceServicer_to_server`` expects."""

    def __init__(self, registry: Registry) -> None:
        self._registry = registry

    def _entity(self, project: str, name: str) -> Entity:
        return cast(Entity, self._registry.get(project, KIND_ENTITY, name))

    def _table(self, project: str, name: str) -> FeatureTable:
        return cast(FeatureTable, self._registry.get(project, KIND_FEATURE_TABLE, name))

    def _tables(self, project: str, labels: dict[str, str] | None) -> list[FeatureTable]:
        found = self._registry.list(project, KIND_FEATURE_TABLE, labels)
        return [t for t in found if isinstance(t, FeatureTable)]

    def _feast_table(self, project: str, name: str) -> FeatureTable:
        """Return a table Feast 0.9 can read; a stream-only table is not one.

        Raises:
            NotFoundError: If there is no such table, or it has no batch source.
        """
        table = self._table(project, required(name, "name", "name a feature table"))
        if table.batch_source is None:
            raise NotFoundError(
                f"feature table {name} has no batch_source, which Feast 0.9 requires, so Feast "
                f"clients do not see it (it is stream-only in potluck project {project}); read "
                "it with potluck's SDK or CLI",
                kind=KIND_FEATURE_TABLE,
                name=name,
                project=project,
            )
        return table

    @_call
    def GetFeastCoreVersion(  # noqa: N802
        self, request: pb.GetFeastCoreVersionRequest
    ) -> pb.GetFeastCoreVersionResponse:
        return pb.GetFeastCoreVersionResponse(version=version("potluck"))

    @_call
    def GetEntity(self, request: pb.GetEntityRequest) -> pb.GetEntityResponse:  # noqa: N802
        entity = self._entity(
            _project(request.project), required(request.name, "name", "name an entity")
        )
        return pb.GetEntityResponse(entity=entity_to_feast(entity))

    @_call
    def ApplyEntity(self, request: pb.ApplyEntityRequest) -> pb.ApplyEntityResponse:  # noqa: N802
        project = _project(request.project)
        required(request.spec.name, "spec.name", "name the entity")
        entity = entity_from_feast(request.spec)
        self._registry.apply(project, [entity])
        return pb.ApplyEntityResponse(entity=entity_to_feast(self._entity(project, entity.name)))

    @_call
    def ListEntities(  # noqa: N802
        self, request: pb.ListEntitiesRequest
    ) -> pb.ListEntitiesResponse:
        f = request.filter
        found = self._registry.list(_project(f.project), KIND_ENTITY, dict(f.labels) or None)
        return pb.ListEntitiesResponse(
            entities=[entity_to_feast(e) for e in found if isinstance(e, Entity)]
        )

    @_call
    def ListFeatures(  # noqa: N802
        self, request: pb.ListFeaturesRequest
    ) -> pb.ListFeaturesResponse:
        """List the features of the tables keyed by (at least) the filter's entities.

        Only features whose labels include the filter's labels; keyed ``table:feature``.
        """
        f = request.filter
        entities = set(f.entities)
        labels = dict(f.labels).items()
        response = pb.ListFeaturesResponse()
        for table in self._tables(_project(f.project), None):
            if not entities <= set(table.entities):
                continue
            for feature in table.features:
                if labels <= feature.labels.items():
                    response.features[f"{table.name}:{feature.name}"].CopyFrom(
                        feature_to_feast(feature)
                    )
        return response

    @_call
    def CreateProject(  # noqa: N802
        self, request: pb.CreateProjectRequest
    ) -> pb.CreateProjectResponse:
        self._registry.create_project(required(request.name, "name", "name the project"))
        return pb.CreateProjectResponse()

    @_call
    def ArchiveProject(  # noqa: N802
        self, request: pb.ArchiveProjectRequest
    ) -> pb.ArchiveProjectResponse:
        self._registry.archive_project(required(request.name, "name", "name the project"))
        return pb.ArchiveProjectResponse()

    @_call
    def ListProjects(  # noqa: N802
        self, request: pb.ListProjectsRequest
    ) -> pb.ListProjectsResponse:
        return pb.ListProjectsResponse(projects=[p.name for p in self._registry.list_projects()])

    @_call
    def ApplyFeatureTable(  # noqa: N802
        self, request: pb.ApplyFeatureTableRequest
    ) -> pb.ApplyFeatureTableResponse:
        project = _project(request.project)
        spec = request.table_spec
        required(spec.name, "table_spec.name", "name the feature table")
        if spec.batch_source.ByteSize() == 0:
            raise DefinitionError(
                f"feature table {spec.name}: batch_source is not set; Feast 0.9 requires one: a "
                "BATCH_FILE source with file_options (file_url, parquet_format) and "
                "event_timestamp_column (a stream-only table can be applied with potluck's own "
                "SDK or CLI, but Feast clients do not see it)",
                field="feature_table.batch_source",
            )
        table = feature_table_from_feast(spec)
        self._registry.apply(project, [table])
        stored = self._table(project, table.name)
        return pb.ApplyFeatureTableResponse(table=feature_table_to_feast(stored))

    @_call
    def ListFeatureTables(  # noqa: N802
        self, request: pb.ListFeatureTablesRequest
    ) -> pb.ListFeatureTablesResponse:
        f = request.filter
        project = _project(f.project)
        tables = self._tables(project, dict(f.labels) or None)
        stream_only = [t.name for t in tables if t.batch_source is None]
        if stream_only:
            _log.info(
                "ListFeatureTables leaves out the tables of project %s without a batch source, "
                "which Feast 0.9 cannot read: %s",
                project,
                ", ".join(stream_only),
            )
        return pb.ListFeatureTablesResponse(
            tables=[feature_table_to_feast(t) for t in tables if t.batch_source is not None]
        )

    @_call
    def GetFeatureTable(  # noqa: N802
        self, request: pb.GetFeatureTableRequest
    ) -> pb.GetFeatureTableResponse:
        table = self._feast_table(_project(request.project), request.name)
        return pb.GetFeatureTableResponse(table=feature_table_to_feast(table))

    @_call
    def DeleteFeatureTable(  # noqa: N802
        self, request: pb.DeleteFeatureTableRequest
    ) -> pb.DeleteFeatureTableResponse:
        name = required(request.name, "name", "name the feature table to delete")
        self._registry.delete(_project(request.project), KIND_FEATURE_TABLE, name)
        return pb.DeleteFeatureTableResponse()


__all__ = ["DEFAULT_PROJECT", "SERVICE_NAME", "add_core_service"]
