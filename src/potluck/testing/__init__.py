"""Test helpers shipped with potluck so third-party plug-ins can prove themselves."""
