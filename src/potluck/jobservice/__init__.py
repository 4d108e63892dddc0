"""The Job Service: starts and tracks ingestion and retrieval jobs for remote clients.

:class:`~potluck.jobservice.service.JobService` is the one backend; ``server.py`` serves it over
gRPC (``potluck.jobservice.v1.JobService``), ``scheduler.py`` runs scheduled ingestion,
``control_loop.py`` keeps one stream job per table with a stream source, and ``remote.py`` is
the client the SDK and the CLI use when ``job_service_url`` is set.
"""
