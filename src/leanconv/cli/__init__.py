"""The ``leanconv`` command line: one small module per command, wired in :mod:`.main`."""
