"""mailstack: one small operator file to a complete, hardened mail stack."""

# The one place the version lives (pyproject.toml reads it): a stack records the version
# that rendered it, and `mailstack update` moves it to this one.
__version__ = "0.1.0"
