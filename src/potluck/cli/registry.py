"""The registry commands: init, plan, apply, entities, feature-tables and projects."""

from __future__ import annotations

import dataclasses
import textwrap
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from potluck.cli import _render as render
from potluck.cli._render import OutputFormat, OutputOption
from potluck.cli._sample_data import ENTITIES_FILE, ROWS_FILE, SAMPLE_FOLDER, sample_files
from potluck.cli._stderr import stdout_to_stderr
from potluck.cli.main import Needs, confirm, make_client
from potluck.config import CONFIG_FILE_NAME, SETTING_NAMES, Settings
from potluck.definitions import Entity, Feature, FeatureTable, FileSource
from potluck.definitions.loader import LoadedDefinitions, load_paths
from potluck.definitions.serde import Definition, to_dict
from potluck.definitions.sources import resolve_source_path
from potluck.errors import (
    AlreadyExistsError,
    DefinitionError,
    NotFoundError,
    PotluckError,
    ValidationError,
)
from potluck.types import ValueType

EXAMPLE_DEFINITIONS_FILE = "definitions.yaml"

EXAMPLE_DEFINITIONS: tuple[Definition, ...] = (
    Entity(name="driver_id", value_type=ValueType.INT64, description="A driver's id."),
    FeatureTable(
        name="driver_stats",
        entities=("driver_id",),
        features=(
            Feature(name="conv_rate", value_type=ValueType.FLOAT),
            Feature(name="acc_rate", value_type=ValueType.FLOAT),
            Feature(name="avg_daily_trips", value_type=ValueType.INT64),
        ),
        max_age=timedelta(days=1),
        batch_source=FileSource(
            path="data/driver_stats",
            event_timestamp_column="event_timestamp",
            created_timestamp_column="created",
        ),
        labels={"team": "drivers"},
    ),
)
"""What ``potluck init`` writes to ``definitions.yaml``."""

PathsArgument = Annotated[
    list[Path] | None,
    typer.Argument(
        help="Definitions files or folders: a folder stands for every *.yaml, *.yml and *.py "
        "in it (not its subfolders, hidden files or potluck.yaml).",
        metavar="[PATH]...",
        show_default=False,
    ),
]
FileOption = Annotated[
    list[Path] | None,
    typer.Option(
        "--file",
        "-f",
        help="A definitions file, YAML (.yaml, .yml) or Python (.py), or a folder of them; "
        "repeat for more.",
        show_default=False,
    ),
]
ForceOption = Annotated[
    bool,
    typer.Option("--force", help="Allow changing a table's entities or a feature's type."),
]
LabelOption = Annotated[
    list[str] | None,
    typer.Option(
        "--label",
        "-l",
        help="Only objects with this label, as key=value; repeat to AND them.",
        metavar="KEY=VALUE",
    ),
]

entities_app = typer.Typer(help="List, describe and delete entities.", no_args_is_help=True)
tables_app = typer.Typer(help="List, describe and delete feature tables.", no_args_is_help=True)
projects_app = typer.Typer(
    help="List, describe, create, archive and restore projects; allow data locations.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    """Add the registry commands to ``app``."""
    app.command()(init)
    app.command()(plan)
    app.command()(apply)
    app.add_typer(entities_app, name="entities")
    app.add_typer(tables_app, name="feature-tables")
    app.add_typer(projects_app, name="projects")


def _labels(values: list[str] | None) -> dict[str, str] | None:
    if not values:
        return None
    labels: dict[str, str] = {}
    for value in values:
        key, sep, item = value.partition("=")
        if not sep or not key:
            raise ValidationError(
                f"--label: expected key=value, got {value!r}", field="label", value=value
            )
        labels[key] = item
    return labels


# ---- init --------------------------------------------------------------------------------------


def default_config_yaml() -> str:
    """Return a ``potluck.yaml`` with every setting at its embedded default, help as comments."""
    defaults = Settings()
    lines = [
        "# potluck settings. Every key has an embedded default; see docs/configuration.md.",
        "# Relative paths are relative to this file's folder.",
    ]
    for name in SETTING_NAMES:
        description = Settings.model_fields[name].description or ""
        lines.append("")
        lines.extend(textwrap.wrap(description, 98, initial_indent="# ", subsequent_indent="# "))
        value = getattr(defaults, name)
        dumped = yaml.safe_dump({name: value}, default_flow_style=False, sort_keys=False)
        lines.append(dumped.rstrip())
    return "\n".join(lines) + "\n"


def _compact(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _compact(v) for k, v in value.items() if v not in (None, {}, "")}
    if isinstance(value, list):
        return [_compact(v) for v in value]
    return value


def example_definitions_yaml() -> str:
    """Return the example definitions file ``potluck init`` writes."""
    data = {
        "entities": [_compact(to_dict(d)) for d in EXAMPLE_DEFINITIONS if isinstance(d, Entity)],
        "feature_tables": [
            _compact(to_dict(d)) for d in EXAMPLE_DEFINITIONS if isinstance(d, FeatureTable)
        ],
    }
    header = (
        "# Example definitions. Preview with `potluck plan -f definitions.yaml`,\n"
        "# then write them to the registry with `potluck apply -f definitions.yaml`.\n"
    )
    return header + yaml.safe_dump(data, sort_keys=False)


def init(
    directory: Annotated[
        Path,
        typer.Argument(help="The folder to set up (created if missing).", file_okay=False),
    ] = Path("."),
    with_sample_data: Annotated[
        bool,
        typer.Option(
            "--with-sample-data",
            help=f"Also write {SAMPLE_FOLDER}/{ROWS_FILE} (a day of hourly rows for "
            f"driver_stats, ending now) and {SAMPLE_FOLDER}/{ENTITIES_FILE} (entity rows for "
            "historical).",
        ),
    ] = False,
) -> None:
    """Write a potluck.yaml with the embedded defaults and an example definitions.yaml.

    With --with-sample-data, also sample rows to ingest and entity rows for a training set.
    Refuses to overwrite any file.
    """
    files = {
        directory / CONFIG_FILE_NAME: default_config_yaml(),
        directory / EXAMPLE_DEFINITIONS_FILE: example_definitions_yaml(),
    }
    if with_sample_data:
        for name, text in sample_files().items():
            files[directory / SAMPLE_FOLDER / name] = text
    for path in files:
        if path.exists():
            raise AlreadyExistsError(
                f"{path} exists; init never overwrites files", kind="file", name=str(path)
            )
    try:
        for path, text in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise PotluckError(f"cannot write {exc.filename}: {exc.strerror}") from None
    definitions = directory / EXAMPLE_DEFINITIONS_FILE
    if not with_sample_data:
        render.show_message(
            f"Wrote {directory / CONFIG_FILE_NAME} and {definitions}. "
            f"Next: potluck apply -f {definitions}"
        )
        return
    steps = [] if directory == Path(".") else [f"cd {directory}"]
    steps += [
        f"potluck apply -f {EXAMPLE_DEFINITIONS_FILE}",
        f"potluck ingest driver_stats {SAMPLE_FOLDER}/{ROWS_FILE}",
        "potluck historical -f driver_stats:conv_rate,driver_stats:avg_daily_trips "
        f"-e {SAMPLE_FOLDER}/{ENTITIES_FILE} --out training.parquet",
        "potluck ingest-online driver_stats",
        "potluck online get driver_stats:conv_rate -e driver_id=1001",
    ]
    render.show_message(
        f"Wrote {directory / CONFIG_FILE_NAME}, {definitions} and "
        f"{directory / SAMPLE_FOLDER}/. Next:",
        *(f"  {step}" for step in steps),
    )


# ---- plan and apply ----------------------------------------------------------------------------


def _definition_paths(paths: list[Path] | None, files: list[Path] | None) -> list[Path]:
    given = [*(files or []), *(paths or [])]
    if not given:
        raise ValidationError(
            "give the definitions to apply: files or folders, as in potluck apply -f "
            "definitions.yaml or potluck apply DIR",
            field="file",
        )
    return given


def _with_sources_beside_their_files(
    loaded: LoadedDefinitions, settings: Settings
) -> list[Definition]:
    """Return the definitions with relative batch source paths resolved, once.

    They resolve against the project root, the folder of the ``potluck.yaml`` the settings were
    read from; without one, against the folder of the definitions file each table came from.
    """
    if settings.config_file is not None:
        return loaded.definitions
    resolved: list[Definition] = []
    for obj in loaded.definitions:
        origin = loaded.origins.get(("feature_table", obj.name))
        if isinstance(obj, FeatureTable) and obj.batch_source is not None and origin:
            folder = origin.file.absolute().parent
            path = resolve_source_path(obj.batch_source.path, folder)
            obj = dataclasses.replace(
                obj, batch_source=dataclasses.replace(obj.batch_source, path=path)
            )
        resolved.append(obj)
    return resolved


def _apply(
    ctx: typer.Context,
    paths: list[Path],
    *,
    force: bool,
    dry_run: bool,
    output: OutputFormat,
) -> None:
    with stdout_to_stderr():  # a .py file runs: its prints must not mix with the output
        loaded = load_paths(paths, skip=(CONFIG_FILE_NAME,))
    client = make_client(ctx, Needs.PREVIEW if dry_run else Needs.NOTHING)
    definitions = _with_sources_beside_their_files(loaded, client.settings)
    try:
        changes = client.apply(definitions, force=force, dry_run=dry_run)
    except DefinitionError as exc:
        raise loaded.locate(exc) from None
    if output is OutputFormat.JSON:
        render.print_json([render.change_json(c) for c in changes])
        return
    if dry_run:
        title = f"Plan for project {client.project!r} (nothing written)"
    else:
        title = f"Applied to project {client.project!r}"
    render.show_changes(changes, title)


def plan(
    ctx: typer.Context,
    paths: PathsArgument = None,
    file: FileOption = None,
    force: ForceOption = False,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Show what applying definitions files or folders would change, without writing anything.

    Takes the same files and folders as apply. Nothing is created, not even the registry.
    """
    _apply(ctx, _definition_paths(paths, file), force=force, dry_run=True, output=output)


def apply(
    ctx: typer.Context,
    paths: PathsArgument = None,
    file: FileOption = None,
    force: ForceOption = False,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Apply the entities and feature tables of definitions files and folders in one transaction.

    Give files with -f (repeat it) or as arguments; a folder stands for every *.yaml, *.yml and
    *.py in it. An object defined twice differently is an error naming both places.

    Relative batch source paths are stored absolute, resolved against the folder of potluck.yaml,
    else of the definitions file. Applying the same files again changes nothing.

    A changed table gets a new revision; its old spec stays in its history.
    """
    _apply(ctx, _definition_paths(paths, file), force=force, dry_run=False, output=output)


# ---- entities ----------------------------------------------------------------------------------


@entities_app.command("list")
def list_entities(
    ctx: typer.Context, label: LabelOption = None, output: OutputOption = OutputFormat.TABLE
) -> None:
    """List the project's entities."""
    labels = _labels(label)
    entities = make_client(ctx).list_entities(labels)
    if output is OutputFormat.JSON:
        render.print_json([to_dict(e) for e in entities])
    else:
        render.show_entities(entities)


@entities_app.command("describe")
def describe_entity(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The entity's name.")],
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Show one entity."""
    entity = make_client(ctx).get_entity(name)
    if output is OutputFormat.JSON:
        render.print_json(to_dict(entity))
    else:
        render.show_entity(entity)


@entities_app.command("delete")
def delete_entity(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The entity's name.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete an entity from the registry (its history is kept).

    Refused while a feature table uses it: delete or change those tables first.
    """
    client = make_client(ctx)
    client.get_entity(name)
    users = [t.name for t in client.list_feature_tables() if name in t.entities]
    if users:  # refused before asking; the registry checks again as it deletes
        raise ValidationError(
            f"entity {name} is used by feature table{'s' if len(users) > 1 else ''} "
            f"{', '.join(users)} in project {client.project}; delete those tables or change "
            "their entities first",
            field="name",
            entity=name,
        )
    if not yes:
        confirm(
            f"Delete entity {name!r} from project {client.project!r}?",
            action=f"delete entity {name!r}",
        )
    client.delete_entity(name)
    render.show_message(f"Deleted entity {name!r} from project {client.project!r}.")


# ---- feature tables ----------------------------------------------------------------------------


@tables_app.command("list")
def list_feature_tables(
    ctx: typer.Context, label: LabelOption = None, output: OutputOption = OutputFormat.TABLE
) -> None:
    """List the project's feature tables."""
    labels = _labels(label)
    tables = make_client(ctx).list_feature_tables(labels)
    if output is OutputFormat.JSON:
        render.print_json([render.table_json(t) for t in tables])
    else:
        render.show_feature_tables(tables)


@tables_app.command("describe")
def describe_feature_table(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The feature table's name.")],
    history: Annotated[
        bool, typer.Option("--history", help="Also show every stored revision, oldest first.")
    ] = False,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Show one feature table: fields, features, sources and, with --history, its revisions."""
    client = make_client(ctx)
    table = client.get_feature_table(name)
    revisions = client.feature_table_history(name) if history else None
    if output is OutputFormat.JSON:
        data = render.table_json(table)
        if revisions is not None:
            data["history"] = [render.revision_json(r) for r in revisions]
        render.print_json(data)
        return
    render.show_feature_table(table)
    if revisions is not None:
        render.show_history(revisions)


@tables_app.command("delete")
def delete_feature_table(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The feature table's name.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete a feature table from the registry (its history is kept)."""
    client = make_client(ctx)
    client.get_feature_table(name)
    if not yes:
        confirm(
            f"Delete feature table {name!r} from project {client.project!r}?",
            action=f"delete feature table {name!r}",
        )
    client.delete_feature_table(name)
    render.show_message(f"Deleted feature table {name!r} from project {client.project!r}.")


# ---- projects ----------------------------------------------------------------------------------


@projects_app.command("list")
def list_projects(
    ctx: typer.Context,
    all_: Annotated[bool, typer.Option("--all", help="Include archived projects.")] = False,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """List the projects."""
    projects = make_client(ctx, Needs.REGISTRY).list_projects(include_archived=all_)
    if output is OutputFormat.JSON:
        render.print_json([render.project_json(p) for p in projects])
    else:
        render.show_projects(projects)


@projects_app.command("create")
def create_project(
    ctx: typer.Context, name: Annotated[str, typer.Argument(help="The new project's name.")]
) -> None:
    """Create a project."""
    project = make_client(ctx, Needs.NOTHING).create_project(name)
    render.show_message(f"Created project {project.name!r}.")


@projects_app.command("archive")
def archive_project(
    ctx: typer.Context, name: Annotated[str, typer.Argument(help="The project's name.")]
) -> None:
    """Archive a project: its definitions stay readable, applies to it are refused."""
    project = make_client(ctx, Needs.REGISTRY).archive_project(name)
    render.show_message(f"Archived project {project.name!r}.")


@projects_app.command("restore")
def restore_project(
    ctx: typer.Context, name: Annotated[str, typer.Argument(help="The project's name.")]
) -> None:
    """Restore an archived project: applies to it are accepted again (administrators)."""
    client = make_client(ctx, Needs.REGISTRY)
    before = next((p for p in client.list_projects(include_archived=True) if p.name == name), None)
    project = client.restore_project(name)
    if before is not None and not before.archived:
        render.show_message(f"Project {project.name!r} is not archived; nothing to restore.")
        return
    render.show_message(f"Restored project {project.name!r}.")


@projects_app.command("allow-location")
def allow_location(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The project's name.")],
    location: Annotated[
        str,
        typer.Argument(
            help="An absolute folder (not /), a URL prefix such as s3://bucket/shared, or "
            "kafka:PREFIX for the topics starting with PREFIX."
        ),
    ],
) -> None:
    """Allow a project's tables to name a location outside its data roots (administrators)."""
    allowed = make_client(ctx, Needs.REGISTRY).allow_location(name, location)
    render.show_message(f"Project {allowed.project!r} may now use {allowed.location}.")


@projects_app.command("describe")
def describe_project(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The project's name.")],
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Show a project: archived or not, its data roots and the locations allowed for it.

    The data roots are the ones the registry enforces: through a Core service, Core's.
    """
    client = make_client(ctx, Needs.REGISTRY)
    found = [p for p in client.list_projects(include_archived=True) if p.name == name]
    if not found:
        raise NotFoundError(f"project {name} not found", kind="project", name=name)
    project = found[0]
    allowed = client.list_allowed_locations(name)
    roots = list(client.data_roots(name))
    created = render.iso_utc(project.created_at) if project.created_at else None
    if output is OutputFormat.JSON:
        render.print_json(
            {
                "name": project.name,
                "archived": project.archived,
                "created_at": created,
                "data_roots": roots,
                "allowed_locations": [
                    {
                        "location": a.location,
                        "allowed_by": a.allowed_by,
                        "allowed_at": render.iso_utc(a.allowed_at),
                    }
                    for a in allowed
                ],
            }
        )
        return
    render.show_table(
        ("project", "archived", "created at (UTC)"),
        [(project.name, "yes" if project.archived else "no", created or "")],
    )
    if roots:
        render.show_table(("data roots (enforced)",), [(r,) for r in roots])
    else:
        render.show_message("No data roots: project data isolation is off.")
    render.show_table(
        ("allowed location", "allowed by", "allowed at (UTC)"),
        [(a.location, a.allowed_by, render.iso_utc(a.allowed_at)) for a in allowed],
    )
