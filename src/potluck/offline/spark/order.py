"""Rows in input order, from dense row numbers, without sampling them.

A training set is written in entity-row order: partition ``p`` of ``P`` holds the ``p``-th range
of row numbers, sorted, so the part files (``part-00000``, ``part-00001``, ...) hold the rows in
order. ``repartitionByRange`` would cut the ranges from a sample of the row numbers, a job of its
own that reads its input once more. The row numbers of a training set are ``0 .. n - 1`` and ``n``
is known once the entity rows are loaded, so the range of row ``r`` is ``r * P div n``: no
sample is needed. Spark's DataFrames have no partitioner to send a row to a given partition,
but hash partitioning by a column puts a value ``v`` in partition ``pmod(hash(v), P)``
(Murmur3, the expression of ``HashPartitioning`` and of SQL's ``hash``): each range's number is
replaced by a value that hashes to it (:func:`range_key`), so partitioning by that value sends
range ``p`` to partition ``p``. Spark itself computes those values, with the same ``hash``, on
the driver (a local relation: no job).
"""

from __future__ import annotations

import pyarrow as pa

try:
    from pyspark.sql import Column, SparkSession
    from pyspark.sql import functions as F  # noqa: N812 - Spark's own convention
except ImportError as exc:  # pragma: no cover - pyspark is the spark extra
    from potluck.errors import PluginDependencyError

    raise PluginDependencyError(
        "the Spark plug-ins need pyspark; run: pip install 'potluck[spark]'",
        plugin="spark",
        extra="spark",
    ) from exc


def partitions_for(spark: SparkSession, rows: int, rows_per_task: int) -> int:
    """How many ranges ``rows`` rows are written in.

    One per ``rows_per_task`` rows (rounded up), at most ``spark.sql.shuffle.partitions``, at
    least one: a small training set is one file, a large one is written by as many tasks as a
    shuffle has. No range is empty.
    """
    configured = int(spark.conf.get("spark.sql.shuffle.partitions") or "1")
    return max(1, min(configured, -(-rows // rows_per_task)))


def range_key(spark: SparkSession, row: Column, rows: int, partitions: int) -> Column:
    """A column that, hash-partitioned into ``partitions``, sends each row to its range.

    Args:
        spark: The session (it computes the hash values, on the driver).
        row: The row number: a long, ``0 .. rows - 1``.
        rows: How many rows there are (at least 1).
        partitions: How many ranges (from 1 to ``rows``).

    Returns:
        An int column: for row number ``r``, a value ``v`` with ``pmod(hash(v), partitions)
        == r * partitions div rows``; ``df.repartition(partitions, key)`` then puts row ``r``
        in that partition.
    """
    values = _hashing_to(spark, partitions)
    number = F.floor(row * F.lit(partitions) / F.lit(rows)).cast("int")
    return F.element_at(F.array(*(F.lit(v) for v in values)), number + 1)


def _hashing_to(spark: SparkSession, partitions: int) -> list[int]:
    """Per partition ``p`` of ``partitions``, the least int ``v >= 0`` hashed into ``p``."""
    found: dict[int, int] = {}
    candidates = 8 * partitions
    start = 0
    while len(found) < partitions:
        # From Arrow, a local relation: the projection is computed on the driver, no job runs.
        values = pa.table({"v": pa.array(range(start, candidates), pa.int32())})
        frame = spark.createDataFrame(values)
        for v, p in frame.select("v", F.pmod(F.hash("v"), F.lit(partitions))).collect():
            found.setdefault(int(p), int(v))
        start, candidates = candidates, 2 * candidates
    return [found[p] for p in range(partitions)]


__all__ = ["partitions_for", "range_key"]
