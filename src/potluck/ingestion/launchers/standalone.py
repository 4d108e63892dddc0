"""The standalone launcher: ``spark-submit`` in client deploy mode, on this machine.

The driver runs here, in a process of its own (``spark-submit`` starts a JVM that runs the
PySpark entry point with ``PYSPARK_DRIVER_PYTHON``, the interpreter of the submitting process);
executors run wherever the master (``spark://host:port``) puts them, or in the driver's JVM for
``local[N]``. The process starts in a session of its own, so a Ctrl-C at the terminal does not
reach it: it is stopped through :meth:`StandaloneLauncher.cancel` (or its job's cancel request).
Its output (stdout and stderr) goes to the application's log file.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from potluck.errors import ConfigError, PluginDependencyError, UnavailableError, ValidationError
from potluck.ingestion.launchers.base import (
    Launcher,
    LaunchHandle,
    LaunchStatus,
    SparkApplication,
)
from potluck.offline.spark.session import executor_python, session_conf
from potluck.offline.spark.settings import is_loopback

STOP_GRACE = 10.0
"""Seconds an application gets to stop after SIGTERM before it is killed (SIGKILL)."""
_POLL = 0.1


def default_spark_submit() -> str:
    """Return the ``spark-submit`` of the installed pyspark package.

    Raises:
        PluginDependencyError: If pyspark is not installed.
    """
    spec = importlib.util.find_spec("pyspark")
    if spec is None or spec.origin is None:
        raise PluginDependencyError(
            "engine 'spark' needs pyspark, which is not installed; run: "
            "pip install 'potluck[spark]'",
            plugin="spark",
            extra="spark",
        )
    return str(Path(spec.origin).parent / "bin" / "spark-submit")


class StandaloneLauncher(Launcher):
    """Runs ``spark-submit --deploy-mode client`` as a child process of this one.

    Args:
        spark_submit: The ``spark-submit`` executable; ``None`` uses the pyspark package's.
        grace: Seconds an application gets to stop after SIGTERM before SIGKILL.
    """

    name = "standalone"

    def __init__(self, spark_submit: str | None = None, *, grace: float = STOP_GRACE) -> None:
        self._spark_submit = spark_submit
        self._grace = grace
        self._lock = threading.Lock()
        self._processes: dict[str, subprocess.Popen[bytes]] = {}
        self._killed: set[str] = set()

    def executable(self) -> str:
        """Return the ``spark-submit`` this launcher runs, checked.

        Raises:
            ConfigError: If it is not an executable file (``engine.spark_submit``).
            PluginDependencyError: If none is set and pyspark is not installed.
        """
        path = self._spark_submit or default_spark_submit()
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            given = "engine.spark_submit" if self._spark_submit else "pyspark's spark-submit"
            raise ConfigError(
                f"{given} {path!r} is not an executable file; set engine.spark_submit to the "
                "path of spark-submit (by default the one of the pyspark package is used)",
                key="engine.spark_submit",
                sources=(),
            )
        return path

    def command(self, application: SparkApplication) -> list[str]:
        """Return the ``spark-submit`` command line of ``application``."""
        settings = application.settings
        command = [
            self.executable(),
            "--master",
            settings.master,
            "--deploy-mode",
            "client",
            "--name",
            application.name,
        ]
        for key, value in session_conf(settings, application.name).items():
            if key not in ("spark.master", "spark.app.name"):
                command += ["--conf", f"{key}={value}"]
        return [*command, application.script, *application.arguments]

    def submit(self, application: SparkApplication) -> LaunchHandle:
        """Start ``spark-submit`` for ``application``; see :meth:`Launcher.submit`.

        The driver runs this process's interpreter (``PYSPARK_DRIVER_PYTHON``); executors run
        ``settings.python`` (``PYSPARK_PYTHON``; this interpreter when unset).
        """
        command = self.command(application)
        env = dict(os.environ)
        env["PYSPARK_DRIVER_PYTHON"] = sys.executable
        env["PYSPARK_PYTHON"] = executor_python(application.settings)
        env["PYTHONUNBUFFERED"] = "1"
        if is_loopback(application.settings.master):
            env.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        try:
            with open(application.log_path, "wb") as log:
                process = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                )
        except OSError as exc:
            raise UnavailableError(
                f"cannot start spark-submit for {application.name!r}: {exc.strerror or exc}; "
                f"log file {application.log_path!r}"
            ) from None
        submission = str(process.pid)
        with self._lock:
            self._processes[submission] = process
        return LaunchHandle(self.name, submission, application.log_path)

    def status(self, handle: LaunchHandle) -> LaunchStatus:
        """Return where the application is; see :meth:`Launcher.status`.

        It runs while any process of its session does (the driver's Python outlives the JVM
        that started it by a moment when the JVM is killed).
        """
        process = self._process(handle)
        code = process.poll()
        if code is None or _group_alive(process.pid):
            return LaunchStatus.RUNNING
        with self._lock:
            killed = handle.submission_id in self._killed
        if killed or code < 0:
            return LaunchStatus.KILLED
        return LaunchStatus.SUCCEEDED if code == 0 else LaunchStatus.FAILED

    def cancel(self, handle: LaunchHandle) -> LaunchStatus:
        """Stop the application: SIGTERM (and SIGCONT, should it be stopped), then SIGKILL.

        See :meth:`Launcher.cancel`; signals go to the application's whole process group.
        """
        process = self._process(handle)
        if self.status(handle).has_ended:
            return self.status(handle)
        with self._lock:
            self._killed.add(handle.submission_id)
        _signal_group(process.pid, signal.SIGTERM)
        _signal_group(process.pid, signal.SIGCONT)
        if not self._wait_gone(process, self._grace):
            _signal_group(process.pid, signal.SIGKILL)
            self._wait_gone(process, self._grace)
        return self.status(handle)

    def _wait_gone(self, process: subprocess.Popen[bytes], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while process.poll() is None or _group_alive(process.pid):
            if time.monotonic() >= deadline:
                return False
            time.sleep(_POLL)
        return True

    def _process(self, handle: LaunchHandle) -> subprocess.Popen[bytes]:
        with self._lock:
            process = self._processes.get(handle.submission_id)
        if process is None or handle.launcher != self.name:
            raise ValidationError(
                f"application {handle.submission_id!r} ({handle.launcher}) was not submitted by "
                "this launcher; follow it through its job records",
                field="handle",
            )
        return process


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal_group(group: int, number: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, number)


__all__ = ["STOP_GRACE", "StandaloneLauncher", "default_spark_submit"]
