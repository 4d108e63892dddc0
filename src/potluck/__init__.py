"""potluck: a feature store. Every team brings its features; every model eats from the same table.

The SDK surface is what this module exports; everything else is an implementation detail.
"""

from potluck.client import Client
from potluck.definitions import (
    AvroFormat,
    Entity,
    Feature,
    FeatureTable,
    FileSource,
    KafkaSource,
    ProtoFormat,
)
from potluck.types import ValueType

__version__ = "0.1.0"

__all__ = [
    "AvroFormat",
    "Client",
    "Entity",
    "Feature",
    "FeatureTable",
    "FileSource",
    "KafkaSource",
    "ProtoFormat",
    "ValueType",
]
