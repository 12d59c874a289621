"""Options made from a dataclass's fields: `solo train`'s from TrainConfig's (a field declared there is a flag here),
and the blocks of options several commands share (:func:`flag_block`, the blocks in options.py).

Typer reads a command's options from its signature, so :func:`config_options` gives the command
one keyword parameter per field, ``Annotated[Optional[T], typer.Option(...)] = None`` (``None``:
not given, so the YAML file or the default applies), with the field's help and flag spelling.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import types
import typing
from typing import Annotated, Optional

import typer

from ..training.config import TrainConfig, option_of


def _value_type(annotation) -> type:
    """``int | None`` -> ``int``: the type a flag parses (every flag may be left out)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        (annotation,) = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    return annotation


def _shown_default(f: dataclasses.Field, decls: tuple[str, ...]) -> str | None:
    """The field's default as ``--help`` shows it (``[default: 0.02]``); nothing where there is none to show: a
    ``None`` default (derived from other options, which the help says), a plain switch (off unless given), or a
    help line that already names its default."""
    value, pair = f.default, next((d for d in decls if "/" in d), None)
    if value in (None, dataclasses.MISSING) or "default" in option_of(f).help:
        return None
    if isinstance(value, bool):  # --x/--no-x: the spelling in effect; a plain switch shows none
        return pair.split("/")[not value].lstrip("-") if pair else None
    return f"{value:g}" if isinstance(value, float) else str(value)


def config_parameters(config_class: type = TrainConfig) -> list[inspect.Parameter]:
    """One keyword parameter per field of ``config_class``, in field order, as typer reads options."""
    hints = typing.get_type_hints(config_class)
    parameters = []
    for f in dataclasses.fields(config_class):
        spec, kind = option_of(f), _value_type(hints[f.name])
        decls = spec.flags or (("--" + f.name.replace("_", "-"),) if kind is bool else ())  # a bool: a switch
        # values are checked by TrainConfig.validate(), as YAML ones are (before anything imports torch)
        default = _shown_default(f, decls)  # in the help line: typer would show "(0.02)" for a None default
        flag = typer.Option(*decls, help=spec.help + (f"  [default: {default}]" if default else ""))
        annotation = Annotated[Optional[kind], flag]
        parameters.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation))
    return parameters


def config_options(command):
    """Give ``command(own options..., **options)`` the TrainConfig fields as options, before its own.

    The fields arrive in ``**options`` by name, ``None`` for each one not given.
    """
    own = [
        p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
        for p in inspect.signature(command, eval_str=True).parameters.values()
        if p.kind is not inspect.Parameter.VAR_KEYWORD
    ]
    clash = {p.name for p in own} & {f.name for f in dataclasses.fields(TrainConfig)}
    if clash:
        raise TypeError(f"{command.__name__}'s own options shadow TrainConfig fields: {', '.join(sorted(clash))}")
    command.__signature__ = inspect.Signature([*config_parameters(), *own], return_annotation=None)
    return command


def flag_block(name: str, block: type):
    """Give a command the options of ``block`` where its parameter ``name`` stands, and that parameter one ``block``
    made of them.

    ``block`` is a dataclass whose fields are options, ``Annotated[T, typer.Option(...)] = default``
    (:class:`.options.LoadFlags`): a block several commands take is declared once, there.
    """
    hints = typing.get_type_hints(block, include_extras=True)
    names = [f.name for f in dataclasses.fields(block)]
    members = [
        inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=hints[f.name])
        for f in dataclasses.fields(block)
    ]

    def decorate(command):
        parameters = []
        for p in inspect.signature(command, eval_str=True).parameters.values():
            parameters += members if p.name == name else [p.replace(kind=inspect.Parameter.KEYWORD_ONLY)]

        @functools.wraps(command)
        def wrapper(**kwargs):
            values = {field: kwargs.pop(field) for field in names}
            return command(**kwargs, **{name: block(**values)})

        wrapper.__signature__ = inspect.Signature(parameters, return_annotation=None)
        return wrapper

    return decorate
