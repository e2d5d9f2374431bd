"""The findings as markdown, figures and JSON."""
