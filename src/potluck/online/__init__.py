"""Stage 4b: online stores, the latest value per entity key."""
