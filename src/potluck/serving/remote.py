"""RemoteServing: online reads through a running Online Serving's gRPC endpoint.

It has the read method of :class:`~potluck.serving.service.ServingService`, so the Client uses
either one the same way. An error the server raised comes back as the same
:class:`~potluck.errors.PotluckError` subclass with the same message and fields.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

import grpc

from potluck._proto.feast.serving import ServingService_pb2 as serving_pb
from potluck._proto.feast.serving import ServingService_pb2_grpc as serving_grpc
from potluck.auth.grpc import PLAIN, ClientSecurity, open_channel, plain_hint
from potluck.errors import PotluckError, UnavailableError
from potluck.registry._errors import CODE_KEY, rebuild_error
from potluck.serving._values import entities_to_proto, response_from_proto
from potluck.serving.response import OnlineResponse


class RemoteServing:
    """A client of ``feast.serving.ServingService`` at ``address``.

    Args:
        address: ``host:port`` of the gRPC endpoint.
        project: The project of references that name none (sent as ``project/table:feature``,
            so the server's own default project does not matter).
        timeout: Deadline in seconds for each call.
        security: TLS (``serving_secure``, ``ca_file``) and the bearer token to send.

    Raises:
        ConfigError: If ``security.ca_file`` cannot be read.
    """

    def __init__(
        self,
        address: str,
        *,
        project: str | None = None,
        timeout: float = 10.0,
        security: ClientSecurity = PLAIN,
    ) -> None:
        self.address = address
        self.project = project
        self.timeout = timeout
        self._security = security
        self._channel = open_channel(address, security)
        self._stub = serving_grpc.ServingServiceStub(self._channel)

    def get_online_features(
        self,
        refs: Sequence[str],
        entities: Mapping[str, Sequence[Any]],
        *,
        full_feature_names: bool = True,
    ) -> OnlineResponse:
        """Read online features from the server (see ``ServingService.get_online_features``).

        Raises:
            UnavailableError: If the server cannot be reached (or its store is down).
            FeatureRefError: If a reference is unknown.
            ValidationError: If the entity rows are malformed.
        """
        if self.project is not None:
            refs = [ref if "/" in ref else f"{self.project}/{ref}" for ref in refs]
        request = serving_pb.GetOnlineFeaturesRequest(
            features=serving_pb.FeatureList(val=list(refs)),
            entities=entities_to_proto(entities),
            full_feature_names=full_feature_names,
        )
        try:
            proto = self._stub.GetOnlineFeatures(request, timeout=self.timeout)
        except grpc.RpcError as exc:
            raise self._error(cast(grpc.Call, exc)) from None
        return response_from_proto(proto)

    def _error(self, call: grpc.Call) -> PotluckError:
        trailing = {key: value for key, value in call.trailing_metadata() or ()}
        code = trailing.get(CODE_KEY)
        details = call.details() or ""
        if isinstance(code, str):
            return rebuild_error(code, details, trailing)
        hint = plain_hint(self._security, "serving_secure", details)
        return UnavailableError(
            f"cannot read from Online Serving at {self.address}: {call.code().name}: {details}"
            + (f".{hint}" if hint else ""),
            address=self.address,
        )

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()


__all__ = ["RemoteServing"]
