"""RetrievalJob: a training set that is computed when it is read."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import pyarrow as pa

from potluck.offline.files import write_atomically

if TYPE_CHECKING:
    import pandas as pd


class RetrievalJob:
    """The result of ``get_historical_features``: run when read, each time it is read.

    The entity rows and the plan were validated when the job was made, so a bad request fails
    there; reading runs the join on the offline engine.

    Args:
        run: Computes the training set as one Arrow table.
        source_versions: The version of each feature table's batch source the job reads, by
            table name (``None`` for a plain Parquet folder, which has no versions). Pass them
            back as ``versions=`` to rebuild the same training set later.

    Attributes:
        source_versions: As given.

    Example:
        >>> job = client.get_historical_features(["driver_stats:*"], "entities.parquet")
        >>> job.to_pandas().head()
    """

    def __init__(
        self,
        run: Callable[[], pa.Table],
        *,
        source_versions: Mapping[str, int | None] | None = None,
    ) -> None:
        self._run = run
        self.source_versions: dict[str, int | None] = dict(source_versions or {})

    def to_arrow(self) -> pa.Table:
        """Run the join and return the training set as an Arrow table."""
        return self._run()

    def to_pandas(self) -> pd.DataFrame:
        """Run the join and return the training set as a pandas DataFrame."""
        frame: pd.DataFrame = self.to_arrow().to_pandas()
        return frame

    def to_parquet(self, path: str | os.PathLike[str]) -> None:
        """Run the join and write the training set to one Parquet file (a local path or a URL).

        The file appears whole or not at all (written under a temporary name, then renamed).
        """
        write_atomically(self.to_arrow(), os.fspath(path), file_format="parquet")


__all__ = ["RetrievalJob"]
