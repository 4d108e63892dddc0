"""The quickstart's definitions: a driver entity and the driver_stats feature table.

`quickstart.py` imports these objects; `potluck apply -f definitions.py` collects them too.
`definitions.yaml` holds the same definitions in YAML, and `potluck init` writes them too. The
batch source (the Parquet files `client.ingest` writes) is the folder `data/driver_stats`, relative
to the working folder.
"""

from datetime import timedelta

from potluck import Entity, Feature, FeatureTable, FileSource, ValueType

driver = Entity(name="driver_id", value_type=ValueType.INT64, description="A driver's id.")

driver_stats = FeatureTable(
    name="driver_stats",
    entities=["driver_id"],
    features=[
        Feature(name="conv_rate", value_type=ValueType.FLOAT),
        Feature(name="acc_rate", value_type=ValueType.FLOAT),
        Feature(name="avg_daily_trips", value_type=ValueType.INT64),
    ],
    max_age=timedelta(days=1),
    batch_source=FileSource(
        path="data/driver_stats",
        event_timestamp_column="event_timestamp",
        created_timestamp_column="created",
    ),
    labels={"team": "drivers"},
)
