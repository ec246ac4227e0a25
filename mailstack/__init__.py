"""mailstack: one small operator file to a complete, hardened mail stack."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mailstack")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"
