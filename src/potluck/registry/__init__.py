"""Stage 2: the registry, the source of truth for definitions."""
