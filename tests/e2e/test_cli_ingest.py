"""``potluck ingest`` and ``potluck historical``: the real entry point for the happy path, the
in-process app for bad input (exit code 2, one stderr line, nothing written)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from potluck.cli.main import app

POTLUCK = Path(sys.executable).parent / "potluck"

DEFINITIONS = """\
entities:
  - {name: driver_id, value_type: INT64}
feature_tables:
  - name: driver_stats
    entities: [driver_id]
    features:
      - {name: conv_rate, value_type: DOUBLE}
      - {name: trips, value_type: INT64}
    max_age: 2h
    batch_source:
      path: data/driver_stats
      event_timestamp_column: event_timestamp
      created_timestamp_column: created
"""

ROWS = """\
driver_id,event_timestamp,created,conv_rate,trips
1001,2024-01-01T10:00:00Z,2024-01-01T10:01:00Z,0.5,10
1001,2024-01-01T10:00:00Z,2024-01-01T10:02:00Z,0.6,11
1002,2024-01-01T09:00:00Z,,0.25,20
"""

ENTITIES = """\
driver_id,event_timestamp,label
1002,2024-01-01T11:00:00Z,a
1001,2024-01-01T10:30:00Z,b
1001,2024-01-01T09:59:59Z,c
"""


def _run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POTLUCK_")}
    return subprocess.run(
        [str(POTLUCK), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.fixture()
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("POTLUCK_") and not name.startswith("POTLUCK_TEST_"):
            monkeypatch.delenv(name)
    (tmp_path / "definitions.yaml").write_text(DEFINITIONS)
    (tmp_path / "rows.csv").write_text(ROWS)
    (tmp_path / "entities.csv").write_text(ENTITIES)
    return tmp_path


def test_ingest_then_historical_through_the_entry_point(workdir: Path) -> None:
    applied = _run(workdir, "apply", "-f", "definitions.yaml")
    assert (applied.returncode, applied.stderr) == (0, "")

    ingested = _run(workdir, "ingest", "driver_stats", "rows.csv")
    assert (ingested.returncode, ingested.stderr) == (0, "")
    source = workdir / "data" / "driver_stats"
    assert sorted(p.name for p in source.iterdir() if p.name.startswith("_")) == [
        "_delta_log",
        "_potluck",
    ]
    parts = sorted(p.name for p in source.iterdir() if not p.name.startswith("_"))
    ingestion_id = parts[0].removeprefix("part-").removesuffix("-00000-superseded.parquet")
    assert parts == [
        f"part-{ingestion_id}-00000-superseded.parquet",
        f"part-{ingestion_id}-00000.parquet",
    ]
    assert ingested.stdout == (
        f"ingested 3 rows into driver_stats (2 files, ingestion id {ingestion_id}, version 1)\n"
    )

    built = _run(
        workdir,
        "historical",
        "--features",
        "driver_stats:conv_rate,driver_stats:trips",
        "--entities",
        "entities.csv",
        "--out",
        "out/training.parquet",
    )
    assert (built.returncode, built.stderr) == (0, "")
    assert built.stdout == (
        "wrote 3 rows x 5 columns to out/training.parquet (source versions: driver_stats@1)\n"
    )
    training = pq.read_table(workdir / "out" / "training.parquet")
    assert training.column_names == [
        "driver_id",
        "event_timestamp",
        "label",
        "driver_stats__conv_rate",
        "driver_stats__trips",
    ]
    assert training.column("label").to_pylist() == ["a", "b", "c"]
    assert training.column("driver_stats__conv_rate").to_pylist() == [0.25, 0.6, None]
    assert training.column("driver_stats__trips").to_pylist() == [20, 11, None]

    as_csv = _run(
        workdir, "historical", "-f", "driver_stats:trips", "-e", "entities.csv", "-O", "t.csv"
    )
    assert (as_csv.returncode, as_csv.stderr) == (0, "")
    assert (workdir / "t.csv").read_text().splitlines() == [
        '"driver_id","event_timestamp","label","driver_stats__trips"',
        '1002,2024-01-01 11:00:00.000000Z,"a",20',
        '1001,2024-01-01 10:30:00.000000Z,"b",11',
        '1001,2024-01-01 09:59:59.000000Z,"c",',
    ]


runner = CliRunner()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["ingest", "driver_stats", "bad.csv"],
            "column 'trips' row 1: '2.5' cannot be stored as feature trips (INT64) without loss",
        ),
        (
            ["ingest", "driver_stats", "missing.csv"],
            "cannot read 'missing.csv': no such file",
        ),
        (
            ["ingest", "nope", "rows.csv"],
            "feature table nope not found in project default",
        ),
        (
            ["historical", "-f", "driver_stats:nope", "-e", "entities.csv", "-O", "o.parquet"],
            "feature table 'driver_stats' has no feature 'nope' (in feature reference "
            "'driver_stats:nope'); its features: conv_rate, trips",
        ),
        (
            ["historical", "-f", "driver_stats:trips", "-e", "entities.csv", "-O", "o.json"],
            "--out must end in .parquet or .csv, got 'o.json'",
        ),
        (
            ["historical", "-f", "driver_stats:trips", "-e", "taken.csv", "-O", "o.parquet"],
            "the entity rows already have a column 'driver_stats__trips', which the feature "
            "columns need; rename or drop it",
        ),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(
    workdir: Path, args: list[str], message: str
) -> None:
    assert runner.invoke(app, ["apply", "-f", "definitions.yaml"]).exit_code == 0
    (workdir / "bad.csv").write_text(
        textwrap.dedent(
            """\
            driver_id,event_timestamp,conv_rate,trips
            1,2024-01-01T00:00:00Z,0.5,2
            1,2024-01-01T00:00:00Z,0.5,2.5
            """
        )
    )
    (workdir / "taken.csv").write_text(
        "driver_id,event_timestamp,driver_stats__trips\n1,2024-01-01T00:00:00Z,3\n"
    )
    before = sorted(p.name for p in workdir.rglob("*") if ".potluck" not in p.parts)
    result = runner.invoke(app, args)
    assert (result.exit_code, result.stderr, result.stdout) == (2, f"error: {message}\n", "")
    assert sorted(p.name for p in workdir.rglob("*") if ".potluck" not in p.parts) == before


def test_ingest_rejects_lossy_rows_anywhere_in_a_parquet_file(workdir: Path) -> None:
    assert runner.invoke(app, ["apply", "-f", "definitions.yaml"]).exit_code == 0
    pq.write_table(
        pa.table(
            {
                "driver_id": pa.array([1, 2, 2**40], pa.int64()),
                "event_timestamp": pa.array([0, 1, 2], pa.timestamp("s", tz="UTC")),
                "conv_rate": [0.1, 0.2, 0.3],
                "trips": pa.array([1, 2, 3], pa.int32()),
            }
        ),
        workdir / "rows.parquet",
    )
    result = runner.invoke(app, ["ingest", "driver_stats", "rows.parquet"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("ingested 3 rows into driver_stats (1 file, ingestion id ")
