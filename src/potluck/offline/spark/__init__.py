"""Apache Spark: the offline store that builds training sets on a cluster.

Also the pieces the Spark ingestion engine shares with it: sessions, scans of batch-source
files, error mapping.

Importing this package does not import pyspark; its modules do.
"""
