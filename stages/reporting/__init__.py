"""The report: the layout of its tables, the papers' transcribed numbers (cocofake.json), and rendering
metrics/report.md."""
