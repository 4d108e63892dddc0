"""``potluck jobservice`` and ``potluck core --job-service`` as processes: they serve jobs, and
SIGTERM stops them with exit code 0."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

from _js_support import seeded_client, settings_for, stats_table

from potluck.jobservice.remote import RemoteJob, RemoteJobService
from potluck.registry.remote import RemoteRegistry

POTLUCK = Path(sys.executable).parent / "potluck"


def test_the_command_serves_jobs_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, "sqlite:///registry.db")
    seeded_client(settings, stats_table(tmp_path)).close()
    process = subprocess.Popen(
        [str(POTLUCK), "jobservice", "--port", "0"],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        line = ""
        while "listening on" not in line:
            line = process.stderr.readline()
            assert line, "the Job Service ended before it listened"
        match = re.search(r"listening on (\S+)", line)
        assert match is not None
        remote = RemoteJobService(match.group(1))
        job = remote.start_offline_to_online(settings.project, "driver_stats")
        assert RemoteJob(remote, job).wait(30).stats.rows_written == 2
        remote.close()
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()


def test_core_with_the_job_service_serves_both_on_one_port_and_stops_on_sigterm(
    tmp_path: Path,
) -> None:
    settings = settings_for(tmp_path, "sqlite:///registry.db")
    seeded_client(settings, stats_table(tmp_path)).close()
    process = subprocess.Popen(
        [str(POTLUCK), "core", "--job-service", "--port", "0"],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        lines = [""]
        while "listening on" not in lines[-1]:
            lines.append(process.stderr.readline())
            assert lines[-1], f"potluck core ended before it listened: {lines}"
        assert "potluck core serves the Job Service too (engine: local)\n" in lines
        match = re.search(r"listening on (\S+)", lines[-1])
        assert match is not None
        registry = RemoteRegistry(match.group(1))
        assert settings.project in [p.name for p in registry.list_projects()]
        remote = RemoteJobService(match.group(1))
        job = remote.start_offline_to_online(settings.project, "driver_stats")
        assert RemoteJob(remote, job).wait(30).stats.rows_written == 2
        assert [j.id for j in remote.list_jobs(settings.project)] == [job.id]
        remote.close()
        registry.close()
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()
