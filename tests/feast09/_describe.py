"""A proto file's messages, enums and service methods as plain data, to compare two builds.

Imported by tests/feast09/test_jobs_sdk.py and by _sdk_jobs_client.py inside Feast's venv, so
it imports nothing but the standard library.
"""

from __future__ import annotations

from typing import Any


def describe(file: Any) -> dict[str, Any]:
    """Return ``file``'s (a ``FileDescriptor``) messages, enums and service methods.

    Messages map each field name to ``[number, type]`` (nested messages included), enums each
    value name to its number, services each method to ``[input type, output type]``.
    """
    messages: dict[str, Any] = {}

    def walk(message: Any) -> None:
        messages[message.full_name] = {f.name: [f.number, f.type] for f in message.fields}
        for nested in message.nested_types:
            walk(nested)

    for message in file.message_types_by_name.values():
        walk(message)
    enums = {
        e.full_name: {v.name: v.number for v in e.values} for e in file.enum_types_by_name.values()
    }
    services = {
        s.full_name: {m.name: [m.input_type.full_name, m.output_type.full_name] for m in s.methods}
        for s in file.services_by_name.values()
    }
    return {"messages": messages, "enums": enums, "services": services}
