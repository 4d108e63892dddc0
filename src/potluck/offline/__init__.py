"""Stage 4a: the offline store. The batch sources are the offline store."""
