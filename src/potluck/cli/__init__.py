"""The ``potluck`` command line; :mod:`potluck.cli.main` is its entry point."""
