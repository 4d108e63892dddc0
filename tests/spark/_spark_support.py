"""What every Spark test shares (see the ``spark_master`` fixture in tests/conftest.py)."""

SPARK_TEST_CONF = {
    "spark.cores.max": "1",
    "spark.executor.memory": "1g",
    "spark.sql.shuffle.partitions": "4",
    "spark.task.maxFailures": "1",
}
"""Spark properties every test application uses: one core each, so a training-set session in
the test process and a ``spark-submit`` job run side by side on the 2-core worker."""
