"""The package version, in one place (read by pyproject.toml, the CLI and every results file)."""

__version__ = "0.1.0"
