"""One module per dashboard; each exposes ``DASHBOARD`` (a :class:`dashboards.spec.Dashboard`)."""
