"""Registries: the named members of a family that grows (channels, codec architectures, schemes,
power policies), in the manner of CompressAI's ``register_model`` and timm's model registry.

A member is one class in one file of its family's package, decorated with that family's
``register``::

    # channels/awgn.py
    @CHANNELS.register("awgn")
    class AWGN(Channel): ...

Every consumer (the config check, the CLI's help, the sweep, the figures, the report) reads the
registry instead of a hand-kept list of names. A family's package imports all of its modules when
it is imported (:func:`import_members`), so a new member is one new file: nothing else names it.

A member's settings are its own: a class may declare ``Settings``, a dataclass whose fields
(each with a default and a comment) become the config group ``<section>.<name>.*``
(:func:`settings_of`); the config composes every group from the registries
(:mod:`meg_lightning.compose`).
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from typing import Callable, Generic, Iterator, TypeVar

from meg_lightning.errors import ConfigError

T = TypeVar("T", bound=type)


@dataclasses.dataclass
class NoSettings:
    """The settings of a member that has none of its own."""

    def validate(self, prefix: str) -> None:  # noqa: ARG002 - nothing to check
        return None


class Registry(Generic[T]):
    """Named classes of one family. ``key`` is the config key that names a member (for errors).

    Members are presented (plots, tables, help) by their ``order`` class attribute (default 0),
    then in registration order."""

    def __init__(self, family: str, key: str):
        self.family, self.key = family, key
        self._members: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Class decorator: add ``cls`` under ``name`` and set ``cls.name = name``."""

        def add(cls: T) -> T:
            if name in self._members and self._members[name] is not cls:
                raise ValueError(f"two {self.family}s named {name!r}: {self._members[name]} "
                                 f"and {cls}")
            cls.name = name
            self._members[name] = cls
            return cls

        return add

    def unregister(self, name: str) -> None:
        """Remove ``name`` (a member registered for a notebook or a test)."""
        self._members.pop(name, None)

    def items(self) -> list[tuple[str, T]]:
        ranked = enumerate(self._members.items())
        return [kv for _, kv in sorted(ranked, key=lambda ikv: (getattr(ikv[1][1], "order", 0),
                                                                ikv[0]))]

    def names(self) -> list[str]:
        return [name for name, _ in self.items()]

    def __contains__(self, name: object) -> bool:
        return name in self._members

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._members)

    def __getitem__(self, name: str) -> T:
        """The class of ``name``; a one-line :class:`ConfigError` naming the key otherwise."""
        try:
            return self._members[name]
        except (KeyError, TypeError):
            raise ConfigError(self.key, name, f"one of {', '.join(self.names())}") from None

    def __repr__(self) -> str:
        return f"Registry({self.family!r}: {', '.join(self.names())})"


def settings_of(cls: type) -> type:
    """The settings dataclass of a registered class (:class:`NoSettings` when it has none)."""
    return getattr(cls, "Settings", NoSettings)


def has_settings(cls: type) -> bool:
    return bool(dataclasses.fields(settings_of(cls)))


def import_members(package: str, path: list[str], skip: tuple[str, ...] = ("base",)) -> None:
    """Import every module of ``package`` (its ``__path__``) except private ones and ``skip``:
    each registers its members on import. Called by a family package's ``__init__``."""
    for info in sorted(pkgutil.iter_modules(path), key=lambda m: m.name):
        if not info.name.startswith("_") and info.name not in skip:
            importlib.import_module(f"{package}.{info.name}")
