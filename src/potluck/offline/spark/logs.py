"""Reading a Spark process's log for the line that says why it ended.

A JVM that exits before it answers (spark-submit refusing a property, a driver that cannot
start) leaves the reason only in its output; both the offline store (its driver's log) and the
Spark engine (an application's log) quote that line in their errors.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

_LOG_TAIL = 65_536
"""Bytes read from the end of a log to find its last error line."""
_ERROR_WORDS = re.compile(r"Error|Exception|No such file|not found", re.IGNORECASE)
NO_JVM = "Could not create the Java Virtual Machine"
"""How :func:`last_error_line` starts the reason java gives for refusing to start."""
_NO_JVM_LINE = f"Error: {NO_JVM}."
_JVM_FATAL_LINE = "Error: A fatal exception has occurred. Program will exit."
_JAVA_EXCEPTION = re.compile(
    r'(?:Exception in thread "[^"]*" )?(?:[\w$]+\.)*(?P<name>[\w$]*(?:Exception|Error)):\s*'
    r"(?P<message>.*)"
)
_SETTING_EXCEPTIONS = frozenset(
    {"SparkException", "IllegalArgumentException", "NumberFormatException"}
)
"""Java exceptions spark-submit throws when a Spark property (``--conf``) has a bad value."""


@dataclass(frozen=True)
class JavaException:
    """A Java exception as a log line states it.

    Attributes:
        name: The exception's class name, without its package (``SparkException``).
        message: Its message (``Executor memory must be a positive number``).
    """

    name: str
    message: str

    @property
    def is_about_a_setting(self) -> bool:
        """Whether it is what Spark throws for a property's bad value (not a lost machine)."""
        return self.name in _SETTING_EXCEPTIONS


def last_error_line(path: str) -> str | None:
    """Return the line of the log at ``path`` that best says why it ended, if any.

    That is the last line naming an error (``Error``, ``Exception``, ``No such file``), else
    the last line that is not a stack frame; ``None`` when the log cannot be read or is empty.
    When ``java`` itself refused to start (an option such as ``-Xmx`` that
    ``spark.driver.memory`` sets), it is :data:`NO_JVM` and java's reason
    (``Could not create the Java Virtual Machine: Invalid maximum heap size: -Xmxlots``).
    """
    try:
        with open(path, "rb") as log:
            log.seek(max(0, os.path.getsize(path) - _LOG_TAIL))
            text = log.read().decode("utf-8", "replace")
    except OSError:
        return None
    lines = [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.strip().startswith(("at ", "...", "File "))
    ]
    # java refused an option: it ends with these two lines, its reason is the line before.
    if len(lines) >= 3 and lines[-2:] == [_NO_JVM_LINE, _JVM_FATAL_LINE]:
        return f"{NO_JVM}: {lines[-3]}"
    errors = [line for line in lines if _ERROR_WORDS.search(line)]
    chosen = errors or lines
    return chosen[-1] if chosen else None


def refused_setting(line: str) -> str | None:
    """Return what Spark or java said when ``line`` says one of them refused a setting's value.

    That is a :class:`JavaException` that :attr:`~JavaException.is_about_a_setting` (given as
    ``message (ExceptionName)``), or java's own refusal to start (:data:`NO_JVM`).
    """
    if line.startswith(f"{NO_JVM}: "):
        return line
    java = java_exception(line)
    if java is None or not java.is_about_a_setting:
        return None
    return f"{java.message} ({java.name})"


def java_exception(line: str) -> JavaException | None:
    """Return the Java exception ``line`` states, if it states one.

    ``Exception in thread "main" org.apache.spark.SparkException: Executor memory must be a
    positive number`` gives ``JavaException("SparkException", "Executor memory must be a
    positive number")``.
    """
    found = _JAVA_EXCEPTION.search(line)
    if found is None:
        return None
    return JavaException(found.group("name"), found.group("message").strip())


__all__ = ["NO_JVM", "JavaException", "java_exception", "last_error_line", "refused_setting"]
