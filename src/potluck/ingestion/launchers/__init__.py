"""Launchers: how the process of a Spark job is started, followed and stopped.

``base.py`` holds the interface; ``standalone.py`` runs ``spark-submit`` on this machine (client
deploy mode) against a standalone master or ``local[N]``. Kubernetes, EMR and Dataproc launchers
fit the same interface.
"""
