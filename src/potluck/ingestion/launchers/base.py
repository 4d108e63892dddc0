"""The Launcher interface: submit a Spark application, ask how it is, stop it.

A launcher knows nothing of feature tables or job records: it starts one application (a PySpark
entry point with its arguments and Spark settings) and hands back a :class:`LaunchHandle`. The
Spark engine writes job records and follows them; the launcher only says whether the
application's process still runs, and kills it when asked.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from enum import Enum

from potluck.offline.spark.settings import SparkSettings


class LaunchStatus(str, Enum):
    """Where a launched application is."""

    RUNNING = "RUNNING"
    """Submitted and not ended (it may still wait for the cluster's cores)."""
    SUCCEEDED = "SUCCEEDED"
    """Ended by itself, with success."""
    FAILED = "FAILED"
    """Ended by itself, with an error (see its log)."""
    KILLED = "KILLED"
    """Stopped by :meth:`Launcher.cancel` (or by a signal from elsewhere)."""

    @property
    def has_ended(self) -> bool:
        """Whether the application's process is gone."""
        return self is not LaunchStatus.RUNNING


@dataclass(frozen=True)
class SparkApplication:
    """What to launch.

    Attributes:
        name: The application's name, as the cluster shows it.
        script: The path of the PySpark entry point (a ``.py`` file) the driver runs.
        arguments: Its command-line arguments.
        settings: The cluster and the Spark properties (``spark.executor.memory``...) it runs
            with; ``settings.python`` is the executors' interpreter.
        log_path: The file the launcher sends the application's output to.
    """

    name: str
    script: str
    arguments: tuple[str, ...]
    settings: SparkSettings
    log_path: str


@dataclass(frozen=True)
class LaunchHandle:
    """A launched application, as its launcher knows it.

    Attributes:
        launcher: The launcher's name (``"standalone"``).
        submission_id: The launcher's own id of the submission (a process id for
            ``standalone``; a pod or step id for cluster launchers).
        log_location: Where the application's output goes (a file, or a URL).
        application_id: The Spark application id (``app-...``, ``local-...``) once the driver
            has reported it; ``None`` before.
    """

    launcher: str
    submission_id: str
    log_location: str
    application_id: str | None = None

    def with_application_id(self, application_id: str | None) -> LaunchHandle:
        """Return this handle carrying ``application_id``."""
        return replace(self, application_id=application_id)


class Launcher(ABC):
    """Starts, follows and stops Spark applications."""

    name: str
    """The launcher's name, recorded in its handles."""

    @abstractmethod
    def submit(self, application: SparkApplication) -> LaunchHandle:
        """Start ``application`` and return at once.

        Raises:
            ConfigError: If the launcher's own settings are wrong (no ``spark-submit``).
            UnavailableError: If the application cannot be started.
        """

    @abstractmethod
    def status(self, handle: LaunchHandle) -> LaunchStatus:
        """Return where the application of ``handle`` is now.

        Raises:
            ValidationError: If this launcher did not submit it.
        """

    @abstractmethod
    def cancel(self, handle: LaunchHandle) -> LaunchStatus:
        """Stop the application of ``handle`` and return once it is gone.

        It is asked to stop first, then killed if it has not stopped within the launcher's
        grace period. An application that has ended already is left as it is.

        Returns:
            Where the application ended (:attr:`LaunchStatus.KILLED` unless it had ended).

        Raises:
            ValidationError: If this launcher did not submit it.
        """


__all__ = ["LaunchHandle", "LaunchStatus", "Launcher", "SparkApplication"]
