"""Stage 1: definitions. Pure, immutable data with no I/O."""

from potluck.definitions.entity import Entity
from potluck.definitions.feature import Feature
from potluck.definitions.feature_table import FeatureTable
from potluck.definitions.refs import FeatureRef
from potluck.definitions.serde import Definition
from potluck.definitions.sources import AvroFormat, FileSource, KafkaSource, ProtoFormat

__all__ = [
    "AvroFormat",
    "Definition",
    "Entity",
    "Feature",
    "FeatureRef",
    "FeatureTable",
    "FileSource",
    "KafkaSource",
    "ProtoFormat",
]
