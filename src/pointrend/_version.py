"""The package's version, in a module of its own so that any module can read it without importing
the package's public API (``pointrend.__version__``; the wheel's version, see pyproject.toml)."""

__version__ = "0.1.0"
