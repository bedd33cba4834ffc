"""Plug-in registries of one shape, and the one rule that picks Redis or memory (DESIGN.md rule 6).

A :class:`Registry` maps names to factories, and holds nothing else: no instances, no settings.
Every factory of a registry takes one argument, the kind's *context* (a frozen dataclass of
what its factories may need, always with the ``redis_url`` of the process, or None), and
returns the plug-in. Implementations register at their definition::

    LOCATION_STORES: Registry[LocationContext, LocationStore] = Registry(
        "location store", "registrar.location_store", names=get_args(StoreName))

    @LOCATION_STORES.register("redis", needs_redis=True)
    def _redis(context: LocationContext) -> LocationStore: ...

The names a setting accepts are declared beside the setting (a ``Literal``), so a
configuration is validated when it is loaded, with its file and field, without importing the
implementations; the registry refuses a factory for a name the setting does not declare, and
``tests/test_plugins.py`` checks that every declared name has one.

The rule (:meth:`Registry.choose`), the same for every store that has the choice: a setting left
unset or ``auto`` means the registry's *shared* back end when a Redis URL is configured, else its
*local* one; a back end that needs Redis without a URL is a configuration error naming the field.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Final, Generic, Protocol, TypeVar

AUTO: Final = "auto"


class Context(Protocol):
    """What every factory context carries: the process's Redis URL (None: no Redis)."""

    @property
    def redis_url(self) -> str | None: ...


C = TypeVar("C", bound=Context)
P = TypeVar("P")
Factory = Callable[[C], P]


class Registry(Generic[C, P]):
    """The factories of one kind of plug-in, by name.

    ``kind`` names the plug-in in messages (``location store``); ``setting`` is the config field
    that chooses one (``registrar.location_store``); ``names`` are the names that field accepts
    besides ``auto``; ``shared`` / ``local``: what ``auto`` picks with / without a Redis URL.
    """

    def __init__(
        self, kind: str, setting: str, *, names: Iterable[str], shared: str = "redis", local: str = "memory"
    ) -> None:
        self.kind = kind
        self.setting = setting
        self.declared = tuple(n for n in names if n != AUTO)
        if shared not in self.declared or local not in self.declared:
            raise ValueError(f"{setting}: auto picks {shared!r} or {local!r}, not all declared")
        self.shared = shared
        self.local = local
        self._factories: dict[str, Factory[C, P]] = {}
        self._needs_redis: set[str] = set()

    def register(self, name: str, *, needs_redis: bool = False) -> Callable[[Factory[C, P]], Factory[C, P]]:
        """Decorator: ``factory`` makes the plug-in called ``name`` (which needs a Redis URL when
        ``needs_redis``)."""
        if name not in self.declared:
            raise ValueError(f"{self.setting} does not declare the {self.kind} {name!r}")
        if name in self._factories:
            raise ValueError(f"{self.kind} {name!r} is registered twice")

        def add(factory: Factory[C, P]) -> Factory[C, P]:
            self._factories[name] = factory
            if needs_redis:
                self._needs_redis.add(name)
            return factory

        return add

    def names(self) -> tuple[str, ...]:
        """The registered names, in registration order."""
        return tuple(self._factories)

    def choose(self, configured: str | None, redis_url: str | None) -> str:
        """The one rule (see the module docstring): the name of the back end to build."""
        if configured is None or configured == AUTO:
            return self.shared if redis_url else self.local
        if configured not in self._factories:
            known = ", ".join((AUTO, *self._factories))
            raise ValueError(f"{self.setting}: unknown {self.kind} {configured!r}; one of {known}")
        if configured in self._needs_redis and not redis_url:
            raise ValueError(f"{self.setting}: the {configured} {self.kind} needs redis.url or REDIS_URL")
        return configured

    def create(self, configured: str | None, context: C) -> P:
        """The plug-in the setting ``configured`` names, built from ``context``."""
        return self._factories[self.choose(configured, context.redis_url)](context)


def needed_url(context: Context) -> str:
    """``context.redis_url`` for a factory registered ``needs_redis`` (:meth:`Registry.choose`
    has refused the choice without one)."""
    if not context.redis_url:
        raise ValueError("this back end needs redis.url or REDIS_URL")
    return context.redis_url
