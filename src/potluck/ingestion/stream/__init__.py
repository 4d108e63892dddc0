"""Stream ingestion: Kafka topics to the online store (and optionally the batch source).

:mod:`~potluck.ingestion.stream.batch` decodes one micro-batch, whatever the engine;
:mod:`~potluck.ingestion.stream.kafka` is the local engine's consume loop around it.
"""
