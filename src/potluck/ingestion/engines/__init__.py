"""Where ingestion jobs run: the Engine interface and its built-in plug-ins."""
