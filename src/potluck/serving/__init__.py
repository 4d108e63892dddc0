"""Stage 5: the stateless online read path."""
