"""Option groups: a dataclass declares a set of Typer options once, commands take it whole.

A field of an option-group dataclass is an ``Annotated[type, typer.Option(...)]`` with its
default, exactly what a command parameter would be. A command written with
:func:`with_option_groups` takes the group as one parameter::

    @app.command("rate")
    @with_option_groups
    def rate(protocol: ProtocolOpt = "bb84", link: LinkOptions = DEFAULT_LINK, ...) -> None:
        model = link.model(protocol, 50.0, "gys")

and Typer sees, in its place, one parameter per field (so ``--help`` lists them there, in
field order); the decorator builds the dataclass from their values before calling the
command. ``Annotated[LinkOptions, Without("decoy_probabilities")]`` leaves fields out of a
command that does not take them: they keep their dataclass defaults.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable
from typing import Annotated, Any, TypeVar, get_args, get_origin, get_type_hints

__all__ = ["Without", "option_group", "with_option_groups"]

F = TypeVar("F", bound=Callable[..., Any])


@dataclasses.dataclass(frozen=True)
class Without:
    """``Annotated`` marker: the fields of an option group that a command does not offer."""

    fields: tuple[str, ...]

    def __init__(self, *fields: str) -> None:
        object.__setattr__(self, "fields", fields)


def _group_of(annotation: Any) -> tuple[type, tuple[str, ...]] | None:
    """Return ``(dataclass, excluded fields)`` if ``annotation`` is an option group."""
    excluded: tuple[str, ...] = ()
    if get_origin(annotation) is Annotated:
        annotation, *meta = get_args(annotation)
        for m in meta:
            if isinstance(m, Without):
                excluded += m.fields
    if isinstance(annotation, type) and getattr(annotation, "__option_group__", False):
        return annotation, excluded
    return None


def option_group(cls: type) -> type:
    """Mark a dataclass as an option group (every field an ``Annotated`` Typer option)."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls.__name__} must be a dataclass")
    cls.__option_group__ = True  # type: ignore[attr-defined]
    return cls


def with_option_groups(func: F) -> F:
    """Expand the option-group parameters of a Typer command into their options.

    Raises
    ------
    TypeError
        If a group field has the name of another parameter of the command, or names in
        :class:`Without` are not fields of the group.
    """
    hints = get_type_hints(func, include_extras=True)
    signature = inspect.signature(func)
    params: list[inspect.Parameter] = []
    groups: dict[str, tuple[type, list[str]]] = {}
    for p in signature.parameters.values():
        annotation = hints.get(p.name, p.annotation)
        spec = _group_of(annotation)
        if spec is None:
            params.append(p.replace(annotation=annotation))
            continue
        cls, excluded = spec
        field_hints = get_type_hints(cls, include_extras=True)
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = set(excluded) - set(names)
        if unknown:
            raise TypeError(f"{func.__name__}: {cls.__name__} has no field {sorted(unknown)}")
        taken = [f for f in dataclasses.fields(cls) if f.name not in excluded]
        params.extend(
            inspect.Parameter(
                f.name,
                inspect.Parameter.KEYWORD_ONLY,
                default=f.default,
                annotation=field_hints[f.name],
            )
            for f in taken
        )
        groups[p.name] = (cls, [f.name for f in taken])
    names = [p.name for p in params]
    clashes = {n for n in names if names.count(n) > 1}
    if clashes:
        raise TypeError(f"{func.__name__}: option-group fields clash with {sorted(clashes)}")
    kinds = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in params]

    @functools.wraps(func)
    def command(**kwargs: Any) -> Any:
        for name, (cls, fields) in groups.items():
            kwargs[name] = cls(**{f: kwargs.pop(f) for f in fields})
        return func(**kwargs)

    command.__signature__ = signature.replace(parameters=kinds)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in kinds}
    if "return" in hints:
        command.__annotations__["return"] = hints["return"]
    return command  # type: ignore[return-value]
