"""The SDK surface is exactly ``potluck.__all__``: sorted, complete, nothing leaked."""

from __future__ import annotations

from types import ModuleType

import potluck
from potluck import errors


def _public_names(module: ModuleType) -> set[str]:
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and not isinstance(value, ModuleType)
    }


def test_all_lists_every_public_name_sorted() -> None:
    assert potluck.__all__ == sorted(_public_names(potluck))


def test_all_is_the_documented_sdk() -> None:
    assert potluck.__all__ == [
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


def test_errors_exports_the_whole_error_tree() -> None:
    tree = {
        name
        for name, value in vars(errors).items()
        if isinstance(value, type) and issubclass(value, errors.PotluckError)
    }
    assert errors.__all__ == sorted(tree)
