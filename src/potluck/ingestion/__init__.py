"""Stage 3: the only code that moves data into stores."""
