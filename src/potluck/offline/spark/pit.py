"""The point-in-time plan (:mod:`potluck.offline.pit`) rendered as Spark DataFrame operations.

For each feature table, the entity rows ``(keys, ts)`` and the table's feature rows ``(keys,
event, created, features)`` go into one DataFrame, each row tagged with its table's number, and
are ordered within each (table, key) by ``(event time, rank)``: an entity row's event time is its
``ts`` and its rank is above every feature row's, so the feature rows at exactly ``ts`` come
before it; a feature row's rank is its created time (a null one ranks lowest). A window over each
(table, key), from its first row to the current one, then gives each entity row the last feature
row before it: the greatest event time at or before ``ts``, ties to the greatest created time.
All tables share that one window, so the join is one shuffle by (table, key) and a sort within
each partition, linear in the rows, however many rows a key has and however many tables there
are. ``max_age`` is applied to the winner: if the newest candidate is too old, so is every other.
Each entity row then has one winner per table; one more shuffle, by ranges of row numbers
(computed, not sampled: :mod:`potluck.offline.spark.order`), brings them and the row's own
columns together, one row per entity row, in row order.

The module has no semantics of its own beyond this rendering; which files and rows a table reads
is decided by the caller from :mod:`potluck.offline.snapshots` and :mod:`potluck.offline.files`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone

from potluck.offline.pit import PitPlan, TableJoin
from potluck.offline.spark.order import range_key
from potluck.offline.spark.scan import spark_type

try:
    from pyspark.sql import Column, DataFrame, Window
    from pyspark.sql import functions as F  # noqa: N812 - Spark's own convention
    from pyspark.sql import types as st
except ImportError as exc:  # pragma: no cover - pyspark is the spark extra
    from potluck.errors import PluginDependencyError

    raise PluginDependencyError(
        "the Spark plug-ins need pyspark; run: pip install 'potluck[spark]'",
        plugin="spark",
        extra="spark",
    ) from exc

# Internal names contain ":", which no entity or feature name can, so they never collide.
ROW = "potluck:row"
"""The entity rows' row number (0-based, in input order)."""
TS = "potluck:ts"
"""The entity rows' timestamp, in UTC microseconds."""
EVENT = "potluck:event"
"""A feature row's event time (a timestamp)."""
CREATED = "potluck:created"
"""A feature row's created time (a timestamp, or null)."""
_TABLE = "potluck:table"
_ORDER = "potluck:order"
_RANK = "potluck:rank"
_WINNER = "potluck:winner"
_RANGE = "potluck:range"
_ENTITY_RANK = 2**63 - 1
"""An entity row's rank: above every feature row at the same time."""
_NO_CREATED_RANK = -(2**63)
"""The rank of a feature row without a created time: below every other."""
_NO_LOWER_BOUND_US = 10**18
"""A max_age this long (31,700 years) cannot exclude any row: no bound is applied."""
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_US = timedelta(microseconds=1)


def key_column(entity: str) -> str:
    """Return the name of ``entity``'s key column in the entity rows and the feature rows."""
    return f"potluck:key:{entity}"


def feature_column(position: int) -> str:
    """Return the name of a table's ``position``-th requested feature in its feature rows."""
    return f"potluck:feature:{position}"


def render(
    plan: PitPlan,
    entity_rows: DataFrame,
    rows: int,
    partitions: int,
    feature_rows: Sequence[DataFrame],
    carried: Sequence[str] = (),
) -> DataFrame:
    """Render ``plan`` over DataFrames.

    Args:
        plan: The join.
        entity_rows: One row per entity row: :data:`ROW` (long, ``0 .. rows - 1``, each
            once), :data:`TS` (long, UTC microseconds), :func:`key_column` of every entity the
            plan joins on (the entity's type, no nulls), and the ``carried`` columns.
        rows: How many entity rows there are (at least 1).
        partitions: How many ranges of row numbers the result is cut into (1 to ``rows``).
        feature_rows: Per join, in plan order, the table's rows: :func:`key_column` of each of
            its keys (the entity's type), :data:`EVENT` and :data:`CREATED` (timestamps) and
            :func:`feature_column` of each requested feature (its value type).
        carried: Columns of ``entity_rows`` the result keeps.

    Returns:
        A lazy DataFrame: :data:`ROW`, the ``carried`` columns, then one column per output
        feature named by its output (``table__feature``); one row per entity row, partitioned
        by ranges of :data:`ROW` and sorted within each partition, so that writing it writes
        the rows in order.
    """
    keys = [key_column(entity) for entity in plan.key_columns]
    types = {field.name: field.dataType for field in entity_rows.schema.fields}
    outputs = list(plan.output_columns)
    winner = st.StructType(
        [st.StructField("event", st.LongType())]
        + [st.StructField(f"o{j}", spark_type(c.value_type)) for j, c in enumerate(outputs)]
    )
    unioned = _asking(plan, entity_rows, winner, carried)
    first = 0
    for number, (join, table_rows) in enumerate(zip(plan.joins, feature_rows, strict=True)):
        offered = _offered(number, join, plan, table_rows, types, winner, first, carried)
        unioned = unioned.unionByName(offered)
        first += len(join.features)
    window = (
        Window.partitionBy(_TABLE, *keys)
        .orderBy(_ORDER, _RANK)
        .rowsBetween(Window.unboundedPreceding, Window.currentRow)
    )
    newest = unioned.select(
        ROW,
        TS,
        F.last(_WINNER, ignorenulls=True).over(window).alias(_WINNER),
        *carried,
    ).where(F.col(ROW).isNotNull())
    # Each entity row has one copy per table, each with its table's values (nulls elsewhere)
    # and the first with the row's own columns: the first non-null of each is the value. The
    # copies meet in the partition of their row's range: hash partitioning by the range key
    # satisfies the grouping by (range key, row), so this is the plan's last shuffle.
    spark = entity_rows.sparkSession
    return (
        newest.withColumn(_RANGE, range_key(spark, F.col(ROW), rows, partitions))
        .repartition(partitions, _RANGE)
        .groupBy(_RANGE, ROW)
        .agg(
            *(F.first(name, ignorenulls=True).alias(name) for name in carried),
            *(
                F.first(value, ignorenulls=True).alias(column.output)
                for value, column in zip(_values(plan), outputs, strict=True)
            ),
        )
        .drop(_RANGE)
        .sortWithinPartitions(ROW)
    )


def _asking(
    plan: PitPlan, entity_rows: DataFrame, winner: st.StructType, carried: Sequence[str]
) -> DataFrame:
    """Return the entity rows, one copy per table.

    Each copy has the keys its table joins on (others null) and no winner yet; the first
    table's copy also carries the row's own columns.
    """
    table = F.col(_TABLE)
    return entity_rows.select(
        "*", F.explode(F.sequence(F.lit(0), F.lit(len(plan.joins) - 1))).alias(_TABLE)
    ).select(
        _TABLE,
        *(
            _for_tables(plan, entity, table).alias(key_column(entity))
            for entity in plan.key_columns
        ),
        F.col(TS).alias(_ORDER),
        F.lit(_ENTITY_RANK).alias(_RANK),
        ROW,
        TS,
        F.lit(None).cast(winner).alias(_WINNER),
        *(F.when(table == 0, F.col(name)).alias(name) for name in carried),
    )


def _offered(
    number: int,
    join: TableJoin,
    plan: PitPlan,
    rows: DataFrame,
    types: Mapping[str, st.DataType],
    winner: st.StructType,
    first: int,
    carried: Sequence[str],
) -> DataFrame:
    """Return a table's feature rows in the shape of :func:`_asking`'s rows.

    Its features go into the winner struct at their output positions (from ``first``); the
    other tables' fields are null.
    """
    own = {key_column(k.entity) for k in join.keys}
    positions = range(first, first + len(join.features))
    event = F.unix_micros(F.col(EVENT))
    return _candidates(join, plan, rows).select(
        F.lit(number).alias(_TABLE),
        *(
            (F.col(name) if name in own else F.lit(None).cast(types[name])).alias(name)
            for name in map(key_column, plan.key_columns)
        ),
        event.alias(_ORDER),
        F.coalesce(F.unix_micros(F.col(CREATED)), F.lit(_NO_CREATED_RANK)).alias(_RANK),
        F.lit(None).cast("long").alias(ROW),
        F.lit(None).cast("long").alias(TS),
        F.struct(
            event.alias("event"),
            *(
                F.col(feature_column(j - first)).alias(f"o{j}")
                if j in positions
                else F.lit(None).cast(winner[f"o{j}"].dataType).alias(f"o{j}")
                for j in range(len(winner.fields) - 1)
            ),
        ).alias(_WINNER),
        *(F.lit(None).cast(types[name]).alias(name) for name in carried),
    )


def _values(plan: PitPlan) -> list[Column]:
    """Each output feature's value in a winner: null if the winner is older than max_age."""
    values = []
    first = 0
    for join in plan.joins:
        fresh = _fresh(join)
        for j in range(first, first + len(join.features)):
            value = F.col(_WINNER).getField(f"o{j}")
            values.append(value if fresh is None else F.when(fresh, value))
        first += len(join.features)
    return values


def _candidates(join: TableJoin, plan: PitPlan, rows: DataFrame) -> DataFrame:
    """The feature rows some entity row may match: event time within the plan's range."""
    event = F.unix_micros(F.col(EVENT))
    first, last = join.event_range(plan.earliest, plan.latest)
    # A null event time never matches, nor does one beyond every entity row's reach.
    wanted = event <= _micros(last) if last is not None else event.isNotNull()
    if first is not None:
        wanted = wanted & (event >= _micros(first))
    return rows.where(wanted)


def _for_tables(plan: PitPlan, entity: str, table: Column) -> Column:
    """``entity``'s key in the copies of the tables that join on it, null in the others."""
    users = [n for n, join in enumerate(plan.joins) if any(k.entity == entity for k in join.keys)]
    key = F.col(key_column(entity))
    return key if len(users) == len(plan.joins) else F.when(table.isin(users), key)


def _fresh(join: TableJoin) -> Column | None:
    """Whether the winner is within ``max_age`` of the entity row (``None``: no bound)."""
    if join.max_age is None:
        return None
    bound = join.max_age // _US
    if bound >= _NO_LOWER_BOUND_US:
        return None
    return F.col(_WINNER).getField("event") >= F.col(TS) - F.lit(bound)


def _micros(moment: datetime) -> Column:
    return F.lit((moment - _EPOCH) // _US)


__all__ = ["CREATED", "EVENT", "ROW", "TS", "feature_column", "key_column", "render"]
