"""RetrievalJob.cleanup: a staged training set's folder is deleted, and a later read runs again."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from potluck.offline.retrieval import RetrievalJob, StagedOutput

SCHEMA = pa.schema([pa.field("x", pa.int64())])


def staging(tmp_path: Path) -> tuple[RetrievalJob, list[Path]]:
    """A staged job whose every run writes a new folder under ``tmp_path``."""
    runs: list[Path] = []

    def stage() -> StagedOutput:
        folder = tmp_path / f"run-{len(runs)}"
        folder.mkdir()
        pq.write_table(pa.table({"x": [len(runs)]}), folder / "part-00000.parquet")
        runs.append(folder)

        def batches() -> Iterator[pa.RecordBatch]:
            yield from pq.read_table(folder).to_batches()

        return StagedOutput(str(folder), SCHEMA, batches, lambda: shutil.rmtree(folder))

    return RetrievalJob(stage=stage), runs


def test_cleanup_deletes_the_staged_folder_and_a_later_read_runs_again(tmp_path: Path) -> None:
    job, runs = staging(tmp_path)
    job.cleanup()  # not run yet: nothing to delete
    assert runs == []
    assert job.to_arrow().column("x").to_pylist() == [0]
    assert runs[0].is_dir()

    job.cleanup()

    assert not runs[0].exists()
    assert job.output_location == str(tmp_path / "run-1")
    assert job.to_arrow().column("x").to_pylist() == [1]


def test_a_job_used_as_a_context_manager_is_cleaned_up_at_the_end(tmp_path: Path) -> None:
    job, runs = staging(tmp_path)
    with job as same:
        assert same is job
        assert job.to_arrow().num_rows == 1
    assert len(runs) == 1 and not runs[0].exists()


def test_an_in_memory_job_has_nothing_to_clean_up() -> None:
    with RetrievalJob(lambda: pa.table({"x": [1]})) as job:
        assert job.output_location is None
    assert job.to_arrow().column("x").to_pylist() == [1]
