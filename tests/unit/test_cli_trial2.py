"""Faults a second new-user trial of issue 8 found, in-process on embedded stores: control
characters from user data reach the terminal; ``-o out.csv`` gets no hint; ``jobs list`` cuts ids
on a narrow terminal; confirmations print to stdout; and what a job's row counts mean (exact
counts with duplicate keys across batches, against a brute-force reference)."""

from __future__ import annotations

import itertools
import json
import os
import tempfile
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.main import get_command
from typer.testing import CliRunner, Result

from potluck import Client, Feature, FeatureTable, FileSource, ValueType, plugins
from potluck.cli._render import visible
from potluck.cli.main import app
from potluck.config import load_settings
from potluck.ingestion.jobs import Job, JobSpec, JobStats, JobStatus, save_job
from potluck.ingestion.offline_to_online import Progress, run_offline_to_online
from potluck.offline.base import OfflineStore
from potluck.online.base import OnlineStore
from potluck.online.codec import encode_entity_keys

runner = CliRunner()

ESC_RED = "\x1b[31mred\x1b[0m"
"""An ANSI escape sequence: it would turn the terminal red."""
ESC_RED_SHOWN = "\\x1b[31mred\\x1b[0m"


def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("POTLUCK_") and not name.startswith("POTLUCK_TEST_"):
            monkeypatch.delenv(name)


def error_of(result: Result) -> tuple[int, str]:
    """The exit code and the one stderr line (asserting there is exactly one)."""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return result.exit_code, lines[0].removeprefix("error: ")


# ---- control characters: shown as escapes, never sent to the terminal ---------------------------

HIDDEN = [
    ("\x1b", "\\x1b"),
    ("\n", "\\n"),
    ("\r", "\\r"),
    ("\t", "\\t"),
    ("\x00", "\\x00"),
    ("\x07", "\\x07"),
    ("\x7f", "\\x7f"),
    ("\x9b", "\\x9b"),  # C1 CSI: an escape sequence in one character on some terminals
    ("\x85", "\\x85"),
    ("\u2028", "\\u2028"),
    ("\u2029", "\\u2029"),
    ("\u202e", "\\u202e"),  # right-to-left override
    ("\u2066", "\\u2066"),
    ("\u061c", "\\u061c"),
    ("\ud800", "\\ud800"),  # a lone surrogate cannot even be encoded for the terminal
]


@pytest.mark.parametrize(("char", "shown"), HIDDEN, ids=[s for _, s in HIDDEN])
def test_each_control_character_is_shown_as_repr_shows_it(char: str, shown: str) -> None:
    assert visible(char) == shown == repr(char)[1:-1]
    assert visible(f"a{char}b") == f"a{shown}b"


@pytest.mark.parametrize(
    "text", ["plain", "naïve café", "日本語", "emoji 👍🏽", "a\\nb", " \u00a0 "]
)
def test_printable_text_is_unchanged(text: str) -> None:
    assert visible(text) == text


BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)


def _acts_on_a_terminal(char: str) -> bool:
    """Controls, lone surrogates, line and paragraph separators, bidi controls."""
    return unicodedata.category(char) in ("Cc", "Cs", "Zl", "Zp") or char in BIDI_CONTROLS


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.one_of(st.characters(), st.sampled_from([c for c, _ in HIDDEN])), max_size=30).map(
        "".join
    )
)
def test_visible_escapes_exactly_what_acts_on_a_terminal(text: str) -> None:
    expected = "".join(repr(c)[1:-1] if _acts_on_a_terminal(c) else c for c in text)
    assert visible(text) == expected
    visible(text).encode("utf-8")  # no lone surrogate is left


DESCRIPTION = ESC_RED + " and a\nnewline"
OWNER = ":smile: " + ESC_RED
DEFINITIONS = f"""\
entities:
  - name: user
    value_type: STRING
    description: {json.dumps(DESCRIPTION)}
    labels: {{team: {json.dumps(ESC_RED)}}}
feature_tables:
  - name: profile
    entities: [user]
    features:
      - {{name: nick, value_type: STRING}}
      - {{name: tags, value_type: STRING_LIST}}
    labels: {{owner: {json.dumps(OWNER)}}}
    batch_source: {{path: data/profile, event_timestamp_column: event_timestamp}}
"""


@pytest.fixture()
def hostile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project whose descriptions, labels, values and keys hold escape sequences."""
    monkeypatch.chdir(tmp_path)
    _clean_environment(monkeypatch)
    (tmp_path / "potluck.yaml").write_text("project: default\n")
    (tmp_path / "definitions.yaml").write_text(DEFINITIONS)
    applied = runner.invoke(app, ["apply", "-f", "definitions.yaml"])
    assert applied.exit_code == 0, applied.output
    rows = pa.table(
        {
            "user": ["u1", ESC_RED],
            "event_timestamp": pa.array(
                [datetime.now(timezone.utc) - timedelta(hours=1)] * 2, pa.timestamp("us", "UTC")
            ),
            "nick": ["\x1b]0;title\x07bell", "two\nlines"],
            "tags": [["\x1b[2J"], None],
        }
    )
    with Client() as client:
        client.ingest("profile", rows)
        client.start_offline_to_online_ingestion("profile").wait(60)
    return tmp_path


def _listing(*args: str) -> str:
    result = runner.invoke(app, list(args), env={"COLUMNS": "300"})
    assert (result.exit_code, result.stderr) == (0, ""), result.output
    assert "\x1b" not in result.stdout and "\x07" not in result.stdout
    return result.stdout


def test_tables_show_escape_sequences_as_text(hostile: Path) -> None:
    listed = _listing("entities", "list")
    assert f"{ESC_RED_SHOWN} and a\\nnewline" in listed
    assert f"team={ESC_RED_SHOWN}" in listed
    described = _listing("entities", "describe", "user")
    assert f"{ESC_RED_SHOWN} and a\\nnewline" in described
    tables = _listing("feature-tables", "list")
    assert f"owner=:smile: {ESC_RED_SHOWN}" in tables  # no emoji either: text as given
    assert f"owner=:smile: {ESC_RED_SHOWN}" in _listing("feature-tables", "describe", "profile")


def test_json_escapes_control_characters_as_json_does(hostile: Path) -> None:
    result = runner.invoke(app, ["entities", "describe", "user", "-o", "json"])
    assert result.exit_code == 0
    assert "\x1b" not in result.stdout
    assert '"description": "\\u001b[31mred\\u001b[0m and a\\nnewline"' in result.stdout
    assert json.loads(result.stdout)["description"] == ESC_RED + " and a\nnewline"


def _online_rows(stdout: str) -> list[list[str]]:
    return [
        [cell.strip() for cell in line.split("│")[1:-1]]
        for line in stdout.splitlines()
        if line.startswith("│")
    ]


def test_online_get_shows_values_and_keys_as_text(hostile: Path) -> None:
    args = [
        "online",
        "get",
        "profile:nick",
        "profile:tags",
        "-e",
        "user=u1",
        "-e",
        f"user={ESC_RED}",
    ]
    rows = _online_rows(_listing(*args))
    assert [row[:4] for row in rows] == [
        ["0", "user", "u1", "PRESENT"],
        ["0", "profile__nick", "\\x1b]0;title\\x07bell", "PRESENT"],
        ["0", "profile__tags", '["\\u001b[2J"]', "PRESENT"],  # a list is shown as JSON
        ["1", "user", ESC_RED_SHOWN, "PRESENT"],
        ["1", "profile__nick", "two\\nlines", "PRESENT"],
        ["1", "profile__tags", "", "NULL_VALUE"],
    ]
    as_json = runner.invoke(app, [*args, "-o", "json"])
    assert as_json.exit_code == 0 and "\x1b" not in as_json.stdout
    assert json.loads(as_json.stdout)["values"] == {
        "user": ["u1", ESC_RED],
        "profile__nick": ["\x1b]0;title\x07bell", "two\nlines"],
        "profile__tags": [["\x1b[2J"], None],
    }


def test_error_lines_show_escape_sequences_as_text(hostile: Path) -> None:
    result = runner.invoke(app, ["entities", "describe", f"{ESC_RED}\nx"])
    assert error_of(result) == (2, f"entity {ESC_RED_SHOWN} x not found in project default")


def test_job_records_show_escape_sequences_as_text(hostile: Path) -> None:
    started = datetime(2024, 5, 2, tzinfo=timezone.utc)
    job = Job(
        id="20240502T000000000000Z-0badc0de",
        spec=JobSpec(project="default", table="profile"),
        engine="local",
        status=JobStatus.FAILED,
        created_at=started,
        started_at=started,
        finished_at=started,
        error=f"the store said {ESC_RED}\nand more",
    )
    with Client() as client:
        save_job(client._registry, job)
    described = _listing("jobs", "describe", job.id)
    assert f"error                   the store said {ESC_RED_SHOWN}\\nand more" in described
    cancelled = _listing("jobs", "cancel", job.id)
    assert cancelled == (
        f"job {job.id} has already ended with status FAILED (the store said {ESC_RED_SHOWN}\\nand "
        "more); nothing to cancel\n"
    )


# ---- -o is the output format: a path gets a hint -----------------------------------------------


def _leaves(command: Any, path: tuple[str, ...] = ()) -> list[tuple[str, Any]]:
    if hasattr(command, "commands"):
        return [
            leaf
            for name, sub in sorted(command.commands.items())
            for leaf in _leaves(sub, (*path, name))
        ]
    return [(" ".join(path), command)]


def _has(command: Any, option: str) -> bool:
    return any(option in getattr(p, "opts", ()) for p in command.params)


WITH_OUTPUT = [(name, c) for name, c in _leaves(get_command(app)) if _has(c, "--output")]


def test_only_historical_has_an_output_file_option() -> None:
    assert [name for name, command in WITH_OUTPUT if _has(command, "--out")] == ["historical"]
    assert len(WITH_OUTPUT) > 10


@pytest.fixture()
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working folder: options are checked before anything is read."""
    monkeypatch.chdir(tmp_path)
    _clean_environment(monkeypatch)
    return tmp_path


@pytest.mark.parametrize("value", ["out.csv", "results/", "a/b", "training.parquet"])
@pytest.mark.parametrize(("name", "command"), WITH_OUTPUT, ids=[n for n, _ in WITH_OUTPUT])
def test_a_path_given_to_dash_o_is_told_what_to_do(
    elsewhere: Path, name: str, command: Any, value: str
) -> None:
    result = runner.invoke(app, [*name.split(), "-o", value])
    if _has(command, "--out"):
        hint = f"-o/--output is how the report is printed; to write to {value}, use --out "
        hint += f"{value} (-O {value})"
    else:
        hint = f"-o/--output is how the result is printed; to save it in {value}, redirect "
        hint += f"stdout: -o json > {value}"
    assert error_of(result) == (
        2,
        f"Invalid value for '--output' / '-o': '{value}' is not one of 'table', 'json': {hint} "
        f"(see 'potluck {name} --help')",
    )
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize("value", ["xml", "JSON", "csv"])
def test_a_value_that_is_no_path_gets_no_hint(elsewhere: Path, value: str) -> None:
    result = runner.invoke(app, ["historical", "-o", value])
    assert error_of(result) == (
        2,
        f"Invalid value for '--output' / '-o': '{value}' is not one of 'table', 'json' (see "
        "'potluck historical --help')",
    )


def test_a_path_with_a_space_is_quoted_as_the_shell_needs(elsewhere: Path) -> None:
    result = runner.invoke(app, ["historical", "-O", "t.parquet", "-o", "my set.csv"])
    assert error_of(result)[1] == (
        "Invalid value for '--output' / '-o': 'my set.csv' is not one of 'table', 'json': "
        "-o/--output is how the report is printed; to write to 'my set.csv', use --out "
        "'my set.csv' (-O 'my set.csv') (see 'potluck historical --help')"
    )


# ---- confirmations: stdout is only the command's output ----------------------------------------


def test_an_answer_on_stdin_leaves_stdout_to_the_output(hostile: Path) -> None:
    purge = ["online", "purge", "profile", "-o", "json"]
    result = runner.invoke(app, purge, input="y\n")
    assert (result.exit_code, result.stderr) == (0, "")
    assert json.loads(result.stdout) == {"project": "default", "table": "profile", "removed": 2}
    declined = runner.invoke(app, purge, input="\n")  # an empty answer is the default: no
    assert (declined.exit_code, declined.stdout, declined.stderr) == (1, "", "error: aborted\n")


@pytest.mark.parametrize("answer", ["maybe\n", "yess\n"])
def test_an_answer_that_is_not_yes_or_no_is_an_error(hostile: Path, answer: str) -> None:
    result = runner.invoke(app, ["online", "purge", "profile"], input=answer)
    assert result.stdout == ""
    action = "purge the online values of feature table 'profile'"
    assert error_of(result) == (
        2,
        f"to {action} potluck asks for a confirmation, and stdin answered "
        f"{answer.strip()!r}; answer y or n on stdin, or pass --yes to {action} without asking",
    )


# ---- jobs list: ids are never cut ---------------------------------------------------------------


@pytest.fixture()
def jobs_config(tmp_path: Path) -> Path:
    path = tmp_path / "potluck.yaml"
    path.write_text(yaml.safe_dump({"project": "jobs", "registry": "sqlite:///registry.db"}))
    started = datetime(2024, 5, 2, tzinfo=timezone.utc)
    jobs = [
        ("20240503T090000000000Z-eeeeeeee", "trips", JobStatus.SUCCEEDED, 65_536),
        ("20240502T000500654321Z-cccccccc", "trips", JobStatus.SUCCEEDED, 1_250_000),
        ("20240502T000500123456Z-bbbbbbbb", "driver_hourly_stats_v2", JobStatus.FAILED, 0),
        ("20240501T130000000000Z-dddddddd", "trips", JobStatus.CANCELLED, 10),
    ]
    with Client(settings=load_settings(path)) as client:
        client.create_project("jobs")
        for job_id, table, status, rows in jobs:
            record = Job(
                id=job_id,
                spec=JobSpec(project="jobs", table=table),
                engine="local",
                status=status,
                stats=JobStats(rows, rows, 0, 0),
                created_at=started,
                started_at=started,
                finished_at=started,
            )
            save_job(client._registry, record)
    return path


SHORT_IDS = ["20240503", "20240502T0005006", "20240502T0005001", "20240501"]


@pytest.mark.parametrize("columns", [80, 60, 48, 40, 30, 20])
def test_jobs_list_never_cuts_an_id(jobs_config: Path, columns: int) -> None:
    result = runner.invoke(
        app, ["--config", str(jobs_config), "jobs", "list"], env={"COLUMNS": str(columns)}
    )
    assert (result.exit_code, result.stderr) == (0, ""), result.output
    lines = result.stdout.splitlines()
    first_cells = [line.split(" ", 1)[0] for line in lines if line[:1].isdigit()]
    assert first_cells == SHORT_IDS
    longest = max(len(line) for line in lines)
    # An id and three characters for each of the five other columns, one space apart, fit 36.
    assert longest <= columns if columns >= 36 else longest == 16 + 5 * 4


def test_jobs_list_at_40_columns(jobs_config: Path) -> None:
    result = runner.invoke(
        app, ["--config", str(jobs_config), "jobs", "list"], env={"COLUMNS": "40"}
    )
    rows = [line for line in result.stdout.splitlines() if line[:1].isdigit()]
    assert rows == [
        "20240503         trip SUCC 65,5 65, 2024",
        "20240502T0005006 trip SUCC 1,25 1,2 2024",
        "20240502T0005001 driv FAIL    0   0 2024",
        "20240501         trip CANC   10  10 2024",
    ]


# ---- row counts of a job: per batch, adding up --------------------------------------------------

T0 = datetime(2024, 5, 1, tzinfo=timezone.utc)


def _at(hours: int | None) -> datetime | None:
    return None if hours is None else T0 + timedelta(hours=hours)


@dataclass(frozen=True)
class Row:
    key: int | None
    event: int | None  # hours after T0
    created: int | None
    value: int


@dataclass
class Stores:
    root: Path
    offline: OfflineStore
    online: OnlineStore
    names: Iterator[int]

    def table(self, rows: list[Row]) -> tuple[str, FeatureTable]:
        """A new project and table whose batch source holds ``rows`` in this order."""
        number = next(self.names)
        folder = self.root / f"source{number}"
        folder.mkdir()
        pq.write_table(
            pa.table(
                {
                    "k": pa.array([r.key for r in rows], pa.int64()),
                    "event_timestamp": pa.array(
                        [_at(r.event) for r in rows], pa.timestamp("us", "UTC")
                    ),
                    "created": pa.array([_at(r.created) for r in rows], pa.timestamp("us", "UTC")),
                    "v": pa.array([r.value for r in rows], pa.int64()),
                }
            ),
            folder / "rows.parquet",
        )
        table = FeatureTable(
            name="t",
            entities=("k",),
            features=(Feature(name="v", value_type=ValueType.INT64),),
            batch_source=FileSource(
                path=str(folder),
                event_timestamp_column="event_timestamp",
                created_timestamp_column="created",
            ),
        )
        return f"p{number}", table

    def run(self, rows: list[Row], batch_size: int) -> tuple[Progress, list[JobStats], dict]:
        """Run the job body over ``rows``; return its progress, each reported count, and what
        the store holds per key (event hour and value)."""
        project, table = self.table(rows)
        reported: list[JobStats] = []
        progress = run_offline_to_online(
            project,
            table,
            {"k": ValueType.INT64},
            self.offline,
            self.online,
            start=None,
            end=None,
            batch_size=batch_size,
            on_progress=lambda p: reported.append(p.stats),
        )
        keys = sorted({r.key for r in rows if r.key is not None})
        encoded = encode_entity_keys(
            project, "t", {"k": pa.array(keys, pa.int64())}, {"k": ValueType.INT64}
        )
        read = self.online.read(project, table, encoded.to_pylist(), ["v"], now=T0).to_pydict()
        stored = {
            key: (int((event - T0).total_seconds() // 3600), value)
            for key, event, value in zip(keys, read["event_timestamp"], read["v"], strict=True)
            if event is not None
        }
        return progress, reported, stored


@pytest.fixture(scope="module")
def stores() -> Iterator[Stores]:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        offline = plugins.create(
            plugins.OFFLINE_STORES, {"type": "duckdb", "threads": 1}, root=root
        )
        online = plugins.create(
            plugins.ONLINE_STORES, {"type": "sqlite", "path": str(root / "online.db")}
        )
        yield Stores(root, offline, online, itertools.count())
        offline.close()
        online.close()


def reference(rows: list[Row], batch_size: int) -> tuple[JobStats, dict[int, tuple[int, int]]]:
    """The counts and the store's content, by brute force, per the documented semantics.

    Each batch of ``batch_size`` rows (in source order): rows with a null key or event time are
    rejected; of a key's rows the one with the greatest (event, created) is kept (a null created
    time sorts first; of equal ones the last); it is written if greater than what the store
    holds. Every other row is skipped.
    """
    stored: dict[int, tuple[tuple[int, float], int, int]] = {}
    read = written = rejected = 0
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        read += len(batch)
        newest: dict[int, tuple[tuple[int, float], Row]] = {}
        for row in batch:
            if row.key is None or row.event is None:
                rejected += 1
                continue
            rank = (row.event, float("-inf") if row.created is None else row.created)
            if row.key not in newest or rank >= newest[row.key][0]:
                newest[row.key] = (rank, row)
        for key, (rank, row) in newest.items():
            if key not in stored or rank > stored[key][0]:
                stored[key] = (rank, row.event, row.value)
                written += 1
    content = {key: (event, value) for key, (_, event, value) in stored.items()}
    return JobStats(read, written, read - written - rejected, rejected), content


def test_duplicate_keys_across_batches_have_exact_counts(stores: Stores) -> None:
    rows = [
        # batch 1: key 1 twice (the older one superseded), key 2 once: 2 written, 1 skipped
        Row(1, 1, None, 10),
        Row(1, 3, None, 30),
        Row(2, 2, None, 20),
        # batch 2: key 1 older than stored (skipped), key 2 newer (written), a null key (rejected)
        Row(1, 2, None, 21),
        Row(2, 5, None, 50),
        Row(None, 9, None, 0),
        # batch 3: key 1 newer again (written: a second write of key 1), key 3 new, a null time
        Row(1, 4, None, 40),
        Row(3, 1, None, 31),
        Row(3, None, None, 0),
        # batch 4: key 2 equal to stored (skipped), key 3 same time, created later (written)
        Row(2, 5, None, 51),
        Row(3, 1, 7, 32),
    ]
    progress, reported, stored = stores.run(rows, batch_size=3)
    assert progress.stats == JobStats(rows_read=11, rows_written=6, rows_skipped=3, rows_rejected=2)
    assert reference(rows, 3)[0] == progress.stats
    # Six writes over three keys: a key is written once per batch it wins, never more.
    assert stored == {1: (4, 40), 2: (5, 50), 3: (1, 32)}
    assert reported == [
        JobStats(0, 0, 0, 0),  # counted, before reading
        JobStats(3, 2, 1, 0),
        JobStats(6, 3, 2, 1),
        JobStats(9, 5, 2, 2),
        JobStats(11, 6, 3, 2),  # the end
    ]


def _rows() -> st.SearchStrategy[list[Row]]:
    row = st.builds(
        Row,
        key=st.one_of(st.none(), st.integers(0, 4)),
        event=st.one_of(st.none(), st.integers(0, 5)),
        created=st.one_of(st.none(), st.integers(0, 3)),
        value=st.integers(0, 1000),
    )
    return st.lists(row, min_size=0, max_size=24)


@settings(max_examples=40, deadline=None)
@given(rows=_rows(), batch_size=st.integers(1, 8))
def test_counts_and_store_match_the_reference(
    stores: Stores, rows: list[Row], batch_size: int
) -> None:
    progress, reported, stored = stores.run(rows, batch_size)
    expected, content = reference(rows, batch_size)
    assert progress.stats == expected
    assert stored == {key: event_value for key, event_value in content.items()}
    batches = [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]
    keys_per_batch = sum(
        len({r.key for r in b if r.key is not None and r.event is not None}) for b in batches
    )
    assert progress.stats.rows_written <= keys_per_batch
    for stats in reported:  # every count reported adds up, also while the job runs
        assert stats.rows_read == stats.rows_written + stats.rows_skipped + stats.rows_rejected
    assert [s.rows_read for s in reported] == sorted(s.rows_read for s in reported)
