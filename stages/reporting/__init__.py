"""The report: the layout of its study tables (layout.yaml), the papers' transcribed numbers (cocofake.json),
and rendering metrics/report.md."""
