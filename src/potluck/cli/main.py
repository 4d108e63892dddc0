"""The ``potluck`` command: the typer app, its global options, and errors turned into exit codes.

Every command lives in a command module listed in :data:`COMMAND_MODULES`; each exposes
``register(app)``, called when ``app`` is first used. Whatever escapes a command becomes one line
``error: <message>`` on stderr and an exit code, never a traceback: a
:class:`~potluck.errors.PotluckError` exits 2 (bad input) or 1 (a failure), Ctrl-C exits 130
(``error: interrupted``), SIGTERM exits 143 (``error: terminated``, after the same clean-up as
Ctrl-C: see :mod:`potluck.cli._interrupts`), a closed stdout (``| head -1``) exits 141 quietly
(see :mod:`potluck.cli._closed_stdout`), and any other exception exits 1 with ``error: internal
error: <type>: <message> (run with POTLUCK_DEBUG=1 for the traceback)``. See
:mod:`potluck.cli._stderr` for warnings and log records.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import threading
from dataclasses import dataclass
from enum import Enum
from importlib.metadata import version
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from typer.core import TyperGroup

from potluck.cli._closed_stdout import EXIT_BROKEN_PIPE as EXIT_BROKEN_PIPE
from potluck.cli._closed_stdout import end_quietly, silenced_by_rich, stdout_closed
from potluck.cli._help import reflow_help
from potluck.cli._interrupts import EXIT_INTERRUPTED as EXIT_INTERRUPTED
from potluck.cli._interrupts import EXIT_TERMINATED as EXIT_TERMINATED
from potluck.cli._interrupts import (
    ignore_stop_signals,
    interruption,
    stop_signals_as_interrupts,
)
from potluck.cli._stderr import command_output, internal_error_message, print_error
from potluck.client import Client
from potluck.config import CONFIG_FILE_NAME, Settings, load_settings
from potluck.errors import (
    AlreadyExistsError,
    ConfigError,
    DefinitionError,
    IncompatibleChangeError,
    NotFoundError,
    PermissionDeniedError,
    PotluckError,
    ValidationError,
)

EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2

BAD_INPUT_ERRORS: tuple[type[PotluckError], ...] = (
    DefinitionError,
    ValidationError,
    ConfigError,
    NotFoundError,
    IncompatibleChangeError,
    AlreadyExistsError,
)
"""Errors that mean the input was wrong (exit code 2); ``ValidationError`` covers
``FeatureRefError`` and ``DataValidationError``. Every other error is a failure (exit code 1)."""

COMMAND_MODULES: tuple[str, ...] = (
    "potluck.cli.registry",
    "potluck.cli.ingest",
    "potluck.cli.serve",
    "potluck.cli.jobservice",
    "potluck.cli.online",
    "potluck.cli.schedules",
    "potluck.cli.stream",
    "potluck.cli.audit",
    "potluck.cli.auth",
)
"""The modules whose ``register(app)`` adds commands, in help order."""


def exit_code_for(error: PotluckError) -> int:
    """Return the exit code the CLI ends with when ``error`` escapes a command."""
    return EXIT_BAD_INPUT if isinstance(error, BAD_INPUT_ERRORS) else EXIT_FAILURE


def fail(message: str, code: int, exc: BaseException | None = None) -> NoReturn:
    """Print ``error: <message>`` as one line on stderr and exit with ``code``.

    With ``POTLUCK_DEBUG=1``, ``exc``'s traceback is printed first.
    """
    print_error(message, exc)
    raise typer.Exit(code)


YES_ANSWERS = frozenset({"y", "yes"})
NO_ANSWERS = frozenset({"", "n", "no"})
"""Answers to a confirmation read from stdin (any case); an empty line takes the default, no."""


def confirm(question: str, *, action: str) -> None:
    """Ask ``question`` (yes or no, default no) and return only on yes.

    Stdout stays the command's output: on a terminal the question is asked on stderr (again
    after an answer that is not yes or no). Without one nothing is asked, since no one would see
    it: the answer is read from stdin, so ``echo y | potluck ...`` works, and stdin that ends
    without an answer (a script, cron, CI) is an error that says to pass ``--yes``.

    Args:
        question: The prompt, ending in ``?``.
        action: What the command does, for the message (``"delete feature table 'x'"``).

    Raises:
        ValidationError: If stdin is not a terminal and ends without an answer, or answers
            something other than yes or no (exit code 2).
        typer.Abort: If the answer is no (``error: aborted``, exit code 1).
        KeyboardInterrupt: If the user ends the prompt with Ctrl-C or Ctrl-D.
    """
    interactive = sys.stdin is not None and sys.stdin.isatty()
    while True:
        line = _ask(question) if interactive else _read_line()
        if not line:  # the end of the input
            if interactive:  # Ctrl-D
                typer.echo("", err=True)
                raise KeyboardInterrupt
            raise ValidationError(
                f"to {action} potluck asks for a confirmation, and stdin is not a terminal (it "
                f"ended without an answer); pass --yes to {action} without asking",
                field="yes",
            )
        answer = line.strip().lower()
        if answer in YES_ANSWERS:
            return
        if answer in NO_ANSWERS:
            raise typer.Abort()
        if not interactive:
            raise ValidationError(
                f"to {action} potluck asks for a confirmation, and stdin answered "
                f"{line.strip()!r}; answer y or n on stdin, or pass --yes to {action} without "
                "asking",
                field="yes",
            )
        typer.echo("answer y or n", err=True)


def _read_line() -> str:
    return sys.stdin.readline() if sys.stdin is not None else ""


def _ask(question: str) -> str:
    """Ask ``question`` on stderr and read the answer's line (empty at the end of input)."""
    typer.echo(f"{question} [y/N]: ", nl=False, err=True)
    try:
        return _read_line()
    except KeyboardInterrupt:
        typer.echo("", err=True)  # so the error line starts on a line of its own
        raise


# Typer raises click's exceptions (from its own copy of click in recent versions); find the
# classes through the public ``BadParameter`` rather than importing a private module.
_USAGE_ERROR: type[Exception] = next(
    cls for cls in typer.BadParameter.__mro__ if cls.__name__ == "UsageError"
)
_CLICK_EXCEPTIONS: tuple[type[BaseException], ...] = (
    next(cls for cls in typer.BadParameter.__mro__ if cls.__name__ == "ClickException"),
    typer.Exit,
)
"""What click handles itself: exits (``fail`` raises one) and click's own errors."""


def _is_help_request(exc: Exception) -> bool:
    # Raised when a group runs without a command: typer has printed the help already.
    return type(exc).__name__ == "NoArgsIsHelpError"


def _fail_usage(exc: Any) -> NoReturn:
    ctx = getattr(exc, "ctx", None)
    hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
    fail(exc.format_message() + hint, int(getattr(exc, "exit_code", EXIT_BAD_INPUT)))


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _PotluckGroup(TyperGroup):
    """The root group: turns whatever escapes a command into one stderr line and an exit code."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        reflow_help(self)  # docstring paragraphs rewrap to the terminal, never break mid-line

    def main(self, *args: Any, **kwargs: Any) -> Any:
        on_main_thread = threading.current_thread() is threading.main_thread()
        saved = {s: signal.getsignal(s) for s in _STOP_SIGNALS} if on_main_thread else {}
        try:
            with stop_signals_as_interrupts():
                return super().main(*args, **kwargs)
        except Exception as exc:  # escaped click itself, e.g. from a context's close callback
            if not kwargs.get("standalone_mode", True):
                raise
            print_error(internal_error_message(exc), exc)
            sys.exit(EXIT_FAILURE)
        finally:
            for signum, handler in saved.items():  # a signal may have set them to ignore more
                if handler is not None:
                    signal.signal(signum, handler)

    def make_context(
        self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any
    ) -> Any:
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except _USAGE_ERROR as exc:
            if _is_help_request(exc):
                raise
            _fail_usage(exc)
        except BrokenPipeError:  # --help or --version into a closed pipe
            if not stdout_closed():
                raise
            end_quietly()
        except SystemExit as exc:  # rich's own ending, for help it printed into a closed pipe
            if not silenced_by_rich(exc):
                raise
            end_quietly()

    def invoke(self, ctx: Any) -> Any:
        with command_output():
            try:
                result = super().invoke(ctx)
                sys.stdout.flush()  # so a closed stdout shows here, not at the interpreter's exit
                return result
            except PotluckError as exc:
                fail(exc.message, exit_code_for(exc), exc)
            except _USAGE_ERROR as exc:
                if _is_help_request(exc):
                    raise
                _fail_usage(exc)
            except typer.Abort:
                fail("aborted", EXIT_FAILURE)
            except _CLICK_EXCEPTIONS:
                raise
            except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (Terminated)
                ignore_stop_signals()
                fail(*interruption(exc), exc)
            except BrokenPipeError as exc:
                if not stdout_closed():  # a socket's, not stdout's: an error like any other
                    fail(internal_error_message(exc), EXIT_FAILURE, exc)
                end_quietly()
            except SystemExit as exc:  # rich's own ending, for a table it printed
                if not silenced_by_rich(exc):
                    raise
                end_quietly()
            except Exception as exc:
                fail(internal_error_message(exc), EXIT_FAILURE, exc)


_app = typer.Typer(
    cls=_PotluckGroup,
    name="potluck",
    help=(
        "potluck: a feature store. Define entities and feature tables, apply them to the "
        "registry, load their history, build training sets and serve the latest values.\n\n"
        "Settings come from potluck.yaml (--config, $POTLUCK_CONFIG, else the nearest "
        "potluck.yaml in the working folder or its parents) and POTLUCK_* environment "
        "variables; without a file everything runs on embedded local defaults under "
        ".potluck/.\n\n"
        "Exit codes: 0 success, 1 failure (a service is unreachable, a job failed), 2 bad "
        "input (an invalid definition, argument or setting), 130 interrupted (Ctrl-C), 143 "
        "terminated (SIGTERM; cleaned up as for Ctrl-C), 141 stdout closed early (| head), "
        "quietly; errors are one line on stderr (POTLUCK_DEBUG=1 adds the traceback)."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


@dataclass(frozen=True)
class GlobalOptions:
    """The options given before the command name."""

    config: Path | None = None
    project: str | None = None


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"potluck {version('potluck')}")
        raise typer.Exit()


@_app.callback()
def _global_options(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="The potluck.yaml to read (default: $POTLUCK_CONFIG, else the nearest "
            "potluck.yaml in the working folder or its parents, else embedded defaults).",
            dir_okay=False,
            metavar="PATH",
        ),
    ] = None,
    project: Annotated[
        str | None,
        typer.Option(
            "--project",
            "-p",
            help="The project to work in (overrides the 'project' setting).",
            metavar="NAME",
        ),
    ] = None,
    show_version: Annotated[
        bool,
        typer.Option(
            "--version",
            help="Print potluck's version and exit.",
            callback=_print_version,
            is_eager=True,
        ),
    ] = False,
) -> None:
    ctx.obj = GlobalOptions(config=config, project=project)


def global_options(ctx: typer.Context) -> GlobalOptions:
    """Return the global options of the command line ``ctx`` belongs to."""
    obj = ctx.find_root().obj
    return obj if isinstance(obj, GlobalOptions) else GlobalOptions()


def load_cli_settings(ctx: typer.Context) -> Settings:
    """Resolve the settings for this command line, honouring ``--config`` and ``--project``.

    Without ``--config`` or ``$POTLUCK_CONFIG`` the nearest ``potluck.yaml`` in the working
    folder or its parents is read, as git finds ``.git``.

    Raises:
        ConfigError: If the config file or an environment variable is invalid.
    """
    options = global_options(ctx)
    return load_settings(options.config, overrides={"project": options.project})


class Needs(Enum):
    """What a command needs to exist before it runs; see :func:`make_client`."""

    NOTHING = "nothing"
    """It creates what it needs: the registry and the project (``apply``, ``projects create``)."""
    PREVIEW = "preview"
    """It reads the registry if there is one, else an empty one, anywhere (``plan``)."""
    REGISTRY = "registry"
    """It reads the registry of a project folder, empty when nothing was applied yet
    (``projects list``)."""
    PROJECT = "project"
    """It reads the project, which must exist (every command that reads or loads data)."""


EMPTY_REGISTRY = "sqlite:///:memory:"
"""The registry read in place of a SQLite file that does not exist yet, so reading never
creates ``.potluck/``."""


def make_client(ctx: typer.Context, needs: Needs = Needs.PROJECT) -> Client:
    """Return a :class:`Client` for this command line; it is closed when the command ends.

    Every command module builds its client here, so ``--config`` and ``--project`` mean the same
    thing for every command. Only commands that create something (``needs=Needs.NOTHING``) may
    create the registry's SQLite file; for the others a missing file reads as an empty registry.

    Args:
        ctx: The command's context.
        needs: What must exist before the command runs.

    Raises:
        ConfigError: If the settings are invalid.
        NotFoundError: If no project is found: outside a project folder (no ``potluck.yaml`` in
            the working folder or its parents, no registry file) for ``Needs.REGISTRY`` and
            ``Needs.PROJECT``; or, for ``Needs.PROJECT``, the project does not exist.
        UnavailableError: If the registry or Core service cannot be reached.
    """
    settings = load_cli_settings(ctx)
    missing = _missing_registry_file(settings)
    if missing is not None and needs is not Needs.NOTHING:
        if needs is not Needs.PREVIEW and settings.config_file is None:
            raise no_project_error(missing)
        settings = settings.model_copy(update={"registry": EMPTY_REGISTRY})
    client = Client(settings=settings)
    ctx.call_on_close(client.close)
    if needs is Needs.PROJECT:
        require_project(client)
    return client


def _missing_registry_file(settings: Settings) -> Path | None:
    """Return the registry's SQLite file if the settings name one that does not exist yet."""
    path = settings.registry_file
    return path if path is not None and not path.exists() else None


def no_project_error(registry_file: Path) -> NotFoundError:
    """Return the error of a command that reads a project, run outside any project folder."""
    return NotFoundError(
        f"no potluck project found: no {CONFIG_FILE_NAME} in {Path.cwd()} or its parents, and "
        f"no registry at {registry_file}; run `potluck init` to start a project, or cd into "
        "one",
        kind="project",
    )


def require_project(client: Client) -> None:
    """Raise unless the client's project exists in its registry (archived ones count).

    Raises:
        NotFoundError: Naming the project and the projects that do exist.
        PermissionDeniedError: If the caller may not list projects; the message names the
            project the command is for.
    """
    try:
        names = [p.name for p in client.list_projects(include_archived=True)]
    except PermissionDeniedError as exc:
        if exc.attrs().get("project"):
            raise
        raise PermissionDeniedError(
            f"{exc.message}, which the command needs on project {client.project!r} (it first "
            "checks that the project exists)",
            **{**exc.attrs(), "project": client.project},
        ) from None
    if client.project in names:
        return
    known = f"existing projects: {', '.join(names)}" if names else "nothing was applied yet"
    raise NotFoundError(
        f"project {client.project!r} does not exist ({known}); apply definitions to create "
        "it, or choose another with --project",
        kind="project",
        name=client.project,
    )


_registered: set[str] = set()


def _registered_app() -> typer.Typer:
    for name in COMMAND_MODULES:
        if name not in _registered:
            importlib.import_module(name).register(_app)
            _registered.add(name)
    return _app


def __getattr__(name: str) -> typer.Typer:
    # ``app`` gets its commands on first access rather than at import, so a command module may
    # import this module at top level (for make_client) and be imported first without a cycle.
    if name == "app":
        return _registered_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    """Run the ``potluck`` command (the console-script entry point)."""
    # gRPC's C core logs TLS handshake failures on stderr itself, before potluck's own error
    # line says the same; it reads this when its first channel starts (an explicit value wins)
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    try:
        app = _registered_app()  # imports the command modules: Ctrl-C may come meanwhile
    except KeyboardInterrupt as exc:
        ignore_stop_signals()
        message, code = interruption(exc)
        print_error(message, exc)
        sys.exit(code)
    try:
        app()
    finally:
        # The command has ended and the process only exits now: a signal here would end it by
        # the signal, after its line, instead of with its exit code.
        ignore_stop_signals()


if __name__ == "__main__":
    main()
