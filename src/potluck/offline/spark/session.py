"""Starting a Spark session from :class:`SparkSettings`, and mapping Spark's errors to potluck's.

Code that runs on executors raises :class:`~potluck.errors.PotluckError` as usual;
:func:`executor_errors` wraps such code so the error crosses the JVM as text, and
:func:`spark_errors` on the driver turns it back into the same error class and message.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

from potluck import errors
from potluck.config import setting_error
from potluck.errors import PotluckError, UnavailableError, ValidationError
from potluck.offline.spark.logs import last_error_line, refused_setting
from potluck.offline.spark.settings import SparkSettings, is_loopback

try:
    from pyspark import SparkConf, SparkContext
    from pyspark.errors import PySparkException
    from pyspark.java_gateway import launch_gateway
    from pyspark.logger import PySparkLogger
    from pyspark.sql import SparkSession
except ImportError as exc:  # pragma: no cover - pyspark is the spark extra
    from potluck.errors import PluginDependencyError

    raise PluginDependencyError(
        "the Spark plug-ins need pyspark; run: pip install 'potluck[spark]'",
        plugin="spark",
        extra="spark",
    ) from exc

_QUERY_ERROR_LOGGERS = ("SQLQueryContextLogger", "DataFrameQueryContextLogger")
"""PySpark's loggers of the query errors it raises (``pyspark.errors.exceptions.base``)."""
_MARK = "potluck-error:"
"""Starts the text an executor's :class:`PotluckError` crosses the JVM as."""

BASE_CONF: Mapping[str, str] = {
    "spark.sql.session.timeZone": "UTC",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
}
"""Properties every potluck application sets (the settings' ``conf`` can override them)."""


def session_conf(settings: SparkSettings, app_name: str) -> dict[str, str]:
    """Return the Spark properties of an application named ``app_name`` on ``settings``' cluster.

    A master on this machine gets a driver that listens on 127.0.0.1 only and no web UI.
    """
    conf = {"spark.master": settings.master, "spark.app.name": app_name, **BASE_CONF}
    if is_loopback(settings.master):
        conf.update(
            {
                "spark.driver.host": "127.0.0.1",
                "spark.driver.bindAddress": "127.0.0.1",
                "spark.ui.enabled": "false",
            }
        )
    conf.update(settings.conf)
    return conf


def executor_python(settings: SparkSettings) -> str:
    """Return the interpreter executors run: the settings' ``python`` or the driver's own."""
    return settings.python or sys.executable


def start_session(
    settings: SparkSettings,
    app_name: str,
    *,
    log_file: str | None = None,
    conf_key: str = "conf",
) -> SparkSession:
    """Start (or join) this process's Spark session on ``settings``' cluster.

    ``PYSPARK_PYTHON`` is set in this process's environment first: executors only take the
    interpreter from there. One process has one Spark context; a second call returns it.

    Args:
        settings: The cluster and the Spark properties.
        app_name: The application's name on the cluster.
        log_file: When given, and this process has no Spark JVM yet, the driver JVM is started
            with its output going to this file (appended; its folder is made): Spark's log
            lines (task failures, warnings) and the JVM's own start-up warnings, which would
            otherwise reach the user's terminal; PySpark's JSON lines about query errors go
            there too. Without it, Spark logs as PySpark sets up.
        conf_key: The setting that holds ``settings.conf`` (``offline_store.conf``), named
            when Spark refuses one of its properties.

    Raises:
        ConfigError: If the JVM exited because Spark (a ``SparkException`` or
            ``IllegalArgumentException`` in ``log_file``) or java (an option such as ``-Xmx``)
            refused a property's value; names ``conf_key`` and quotes the refusal.
        UnavailableError: If the cluster cannot be reached or the session does not start;
            quotes the JVM's last error line from ``log_file`` when it exited.
    """
    os.environ["PYSPARK_PYTHON"] = executor_python(settings)
    if is_loopback(settings.master):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    conf = session_conf(settings, app_name)
    builder = SparkSession.builder
    for key, value in conf.items():
        builder = builder.config(key, value)
    try:
        if log_file is not None:
            _launch_jvm(conf, log_file)
        return builder.getOrCreate()
    except Exception as exc:  # noqa: BLE001 - py4j and the JVM raise anything at start
        raise _start_error(settings.master, exc, log_file, conf_key) from None


def _start_error(master: str, exc: Exception, log_file: str | None, conf_key: str) -> PotluckError:
    """Say why the session did not start: the JVM's own last error line when it exited."""
    reason = _first_line(exc)
    see = ""
    if log_file is not None:
        see = f"; its log: {log_file}"
        line = last_error_line(log_file) if SparkContext._gateway is None else None
        refused = None if line is None else refused_setting(line)
        if refused is not None:
            return setting_error(
                conf_key,
                f"Spark refused to start on {master}: {refused}; correct the Spark property "
                f"this is about{see}",
            )
        if line is not None:
            reason = line
    return UnavailableError(
        f"cannot start a Spark session on {master}: {reason}; check that the master is "
        f"running and reachable (and JAVA_HOME points at Java 17 or newer){see}"
    )


def _launch_jvm(conf: Mapping[str, str], log_file: str) -> None:
    """Start this process's Spark JVM with its stdout and stderr going to ``log_file``.

    PySpark starts the JVM (``spark-submit``) at the first session, inheriting the terminal;
    started here first, with the same properties, the session then uses it. Nothing is done if
    a JVM runs already (a stopped session keeps its JVM for the next one).
    """
    if SparkContext._gateway is not None:
        return
    Path(log_file).parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        gateway = launch_gateway(  # type: ignore[no-untyped-call]
            SparkConf(loadDefaults=False).setAll(list(conf.items())),
            popen_kwargs={"stdout": log, "stderr": log},
        )
    SparkContext._ensure_initialized(gateway=gateway)
    # PySpark also logs each query error it raises, as JSON on stderr: into the file too.
    for name in _QUERY_ERROR_LOGGERS:
        logger = PySparkLogger.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.addHandler(logging.FileHandler(log_file))
        logger.propagate = False


@contextlib.contextmanager
def executor_errors() -> Iterator[None]:
    """Let a :class:`PotluckError` raised on an executor cross the JVM intact."""
    try:
        yield
    except PotluckError as exc:
        payload = {"class": type(exc).__name__, "message": exc.message, "attrs": exc.attrs()}
        raise RuntimeError(_MARK + json.dumps(payload, default=str)) from None


@contextlib.contextmanager
def spark_errors(doing: str) -> Iterator[None]:
    """Turn errors out of Spark into potluck errors, on the driver.

    An executor's :class:`PotluckError` (see :func:`executor_errors`) is raised again as
    itself; any other Spark failure becomes a :class:`ValidationError` that says what was being
    done. Ctrl-C stays a :class:`KeyboardInterrupt`.
    """
    try:
        yield
    except PotluckError:
        raise
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - Spark wraps executor errors in py4j and its own
        text = str(exc)
        carried = _carried(text)
        if carried is not None:
            raise carried from None
        if isinstance(exc, (PySparkException, ConnectionError)) or "Py4J" in type(exc).__name__:
            raise ValidationError(f"{doing} failed in Spark: {_first_line(exc)}") from None
        raise


def _carried(text: str) -> PotluckError | None:
    start = text.find(_MARK)
    if start < 0:
        return None
    decoder = json.JSONDecoder()
    try:
        payload, _ = decoder.raw_decode(text[start + len(_MARK) :])
    except ValueError:
        return None
    cls = getattr(errors, str(payload.get("class")), None)
    if not (isinstance(cls, type) and issubclass(cls, PotluckError)):
        cls = PotluckError
    error: PotluckError = cls(str(payload["message"]), **dict(payload.get("attrs") or {}))
    return error


def _first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message; for a JVM error, of the Java exception's own.

    py4j's own first line (``An error occurred while calling o123.parquet.``) says nothing.
    """
    text = str(exc)
    java = getattr(exc, "java_exception", None)
    if java is not None:
        with contextlib.suppress(Exception):  # the JVM may be gone
            text = str(java.toString())
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


__all__ = [
    "BASE_CONF",
    "executor_errors",
    "executor_python",
    "session_conf",
    "spark_errors",
    "start_session",
]
