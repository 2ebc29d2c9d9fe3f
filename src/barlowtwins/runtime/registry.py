"""One registry type for every extension point (data sets, data paths, transfer sets, linear protocols, export
formats): entries by name, registered where they are implemented, looked up with a one-line error.

    >>> EXPORT_FORMATS = Registry("export format")
    >>> EXPORT_FORMATS.register(ExportFormat("pth", ...))      # an entry is any object with a ``name``
    >>> EXPORT_FORMATS.lookup("pht")                           # ConfigError: unknown export format 'pht' (did ...

A `Registry` is a dict (name -> entry) in registration order, so ``choices=list(registry)`` and ``name in
registry`` work as for any dict; the CLI derives its choices and help from it.
"""

from __future__ import annotations

from typing import Generic, Protocol, TypeVar

from barlowtwins.errors import ConfigError
from barlowtwins.runtime.console import did_you_mean


class Named(Protocol):
    """What a registry entry needs: a ``name`` (a read-only attribute, such as a frozen dataclass's field)."""

    @property
    def name(self) -> str: ...


T = TypeVar("T", bound=Named)


class Registry(dict, Generic[T]):
    """Entries of one kind by name. ``what`` names the kind in errors; ``error`` is the exception raised for an
    unknown name (a one-line `BarlowTwinsError` subclass, so the CLI prints it and exits 2)."""

    def __init__(self, what: str, error: type[Exception] = ConfigError):
        super().__init__()
        self.what, self.error = what, error

    def register(self, entry: T) -> T:
        """Add (or replace) ``entry`` under ``entry.name``; returns it (usable as a decorator-like call)."""
        self[entry.name] = entry
        return entry

    def lookup(self, name: str) -> T:
        """The entry called ``name``, else one line naming the closest and every valid name."""
        if name not in self:
            raise self.error(f"unknown {self.what} '{name}'{did_you_mean(name, list(self))}; "
                             f"choose one of {', '.join(self)}")
        return self[name]
