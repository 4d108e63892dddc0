"""PySpark entry points that run inside ``spark-submit``.

They import the engine-neutral rules (``online.codec``, the online stores' write path,
``offline.spark.scan``) and the registry, never the client. Importing this package does not
import pyspark; the entry-point modules do.
"""
