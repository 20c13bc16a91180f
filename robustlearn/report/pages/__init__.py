"""One module per generated docs page: its SOURCES (results stores, each with the per-run files to export) and
`context(bundle, figures) -> dict`, the template's values computed from the bundle alone."""
