"""A command group whose subcommands are imported only when one of them is used.

Each subcommand is named in a static table (:class:`LazyCommand`: where its Typer app lives
and its one-line help). ``qkdtwin --help`` lists the table without importing anything;
``qkdtwin kms serve`` imports :mod:`qkdtwin.cli.kms` (and so the kms layer), nothing else.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any, ClassVar, NamedTuple

import typer
from typer.core import TyperGroup

__all__ = ["LazyCommand", "LazyGroup", "load_app"]


class LazyCommand(NamedTuple):
    """A subcommand group that is imported on first use."""

    #: ``"module:attribute"`` of its :class:`typer.Typer`.
    target: str
    #: Its help, as the Typer app has it: what the parent's ``--help`` lists.
    help: str


def load_app(target: str) -> typer.Typer:
    """Import and return the Typer app named by ``"module:attribute"``."""
    module, _, attribute = target.partition(":")
    app = getattr(importlib.import_module(module), attribute)
    if not isinstance(app, typer.Typer):
        raise TypeError(f"{target} is not a typer.Typer")
    return app


class _Commands(MutableMapping[str, Any]):
    """The group's commands: the loaded ones, and the lazy ones, loaded on first lookup.

    Iteration, ``len`` and ``in`` never load (``--help``, did-you-mean suggestions); a lookup
    of a lazy name loads that one only.
    """

    def __init__(self, loaded: dict[str, Any], lazy: Mapping[str, LazyCommand], group: Any):
        self._loaded = loaded
        self._lazy = dict(lazy)
        self._group = group

    def is_loaded(self, name: str) -> bool:
        return name in self._loaded

    def __getitem__(self, name: str) -> Any:
        if name not in self._loaded and name in self._lazy:
            self._loaded[name] = self._group.load_command(name, self._lazy[name])
        return self._loaded[name]

    def __setitem__(self, name: str, command: Any) -> None:
        self._loaded[name] = command

    def __delitem__(self, name: str) -> None:
        found = self._loaded.pop(name, None) is not None
        found = self._lazy.pop(name, None) is not None or found
        if not found:
            raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        yield from self._loaded
        yield from (n for n in self._lazy if n not in self._loaded)

    def __len__(self) -> int:
        return len(set(self._loaded) | set(self._lazy))

    def __contains__(self, name: object) -> bool:
        return name in self._loaded or name in self._lazy


class LazyGroup(TyperGroup):
    """A :class:`~typer.core.TyperGroup` with lazily imported subcommand groups.

    Subclass it with :attr:`lazy_commands` set, and pass the subclass as ``cls`` to
    :class:`typer.Typer`. The lazy groups follow the eager commands, in table order.
    """

    lazy_commands: ClassVar[Mapping[str, LazyCommand]] = {}

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self.commands = _Commands(dict(self.commands), self.lazy_commands, self)
        self._listing = False

    def load_command(self, name: str, spec: LazyCommand) -> TyperGroup:
        """Import ``spec``'s Typer app and build its group as ``add_typer(app, name)`` would."""
        holder = typer.Typer(
            rich_markup_mode=self.rich_markup_mode, suggest_commands=self.suggest_commands
        )
        holder.add_typer(load_app(spec.target), name=name)
        group = typer.main.get_group(holder).commands[name]
        assert isinstance(group, TyperGroup)
        return group

    def list_commands(self, ctx: Any) -> list[str]:
        """Every subcommand's name, loading none."""
        return list(self.commands)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        """Return ``cmd_name``'s command (while help is written: an unloaded one's stand-in)."""
        commands = self.commands
        assert isinstance(commands, _Commands)
        if self._listing and cmd_name in self.lazy_commands and not commands.is_loaded(cmd_name):
            return TyperGroup(
                name=cmd_name,
                help=self.lazy_commands[cmd_name].help,
                rich_markup_mode=self.rich_markup_mode,
            )
        return commands.get(cmd_name)

    def format_help(self, ctx: Any, formatter: Any) -> None:
        """Write the help; lazy subcommands are listed from the table, not imported."""
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False
