"""Reports and artefacts: markdown, JSON, CSV and plots, written atomically."""
