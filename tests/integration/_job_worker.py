"""A separate process that runs one offline-to-online job on the local engine until it ends.

Run as ``python _job_worker.py CONFIG TABLE BATCH_SIZE``: it submits a ``since_last`` job of
``TABLE`` with ``BATCH_SIZE`` rows per batch (a small size makes the job slow without touching
potluck's code) on the engine ``CONFIG`` configures, prints the job's id, waits for it, and
prints the status it ended with. The tests kill it (SIGKILL) or suspend it (SIGSTOP) while the
job runs.
"""

from __future__ import annotations

import contextlib
import sys

from potluck import Client, plugins
from potluck.config import load_settings
from potluck.errors import JobError
from potluck.ingestion.engines.base import JobContext
from potluck.ingestion.jobs import JobSpec


def main(config: str, table: str, batch_size: int) -> None:
    settings = load_settings(config)
    client = Client(settings=settings)
    engine = plugins.create(plugins.ENGINES, settings.engine)
    context = JobContext(client._registry, client._offline(), client._online())
    spec = JobSpec(project=client.project, table=table, since_last=True, batch_size=batch_size)
    job = engine.submit(spec, context)
    print(job.id, flush=True)
    with contextlib.suppress(JobError):  # its record says why
        job.wait()
    print(job.record().status.value, flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
