"""Keyword options of the model builders: refuse the ones a builder does not take, by name.

torchvision's builders pass unknown keyword arguments on and ignore them; this library's
builders check them first and raise :class:`OptionError`, which names the option, lists the
builder's public options and suggests the closest one. The engine rewords it for a config file
(:meth:`OptionError.located`).
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterable

__all__ = ["OptionError", "check_options", "keyword_options"]


class OptionError(ValueError):
    """A keyword option a builder does not take.

    Attributes:
        builder: the builder's name; option: the option given; problem: what is wrong with it
        (e.g. ``"an unknown option"``); advice: what to do instead (a suggestion and the list
        of known options).
    """

    def __init__(self, builder: str, option: str, problem: str, advice: str):
        self.builder, self.option, self.problem, self.advice = builder, option, problem, advice
        super().__init__(f"{builder}() got {problem} {option!r}; {advice}")

    def located(self, where: str, field: str = "model.options") -> str:
        """The message for an option read from ``field`` of the config ``where``."""
        return f"{where}: {field}.{self.option}: {self.problem} of {self.builder}; {self.advice}"


def keyword_options(function: Callable) -> list[str]:
    """The keyword-only parameters of ``function`` (a builder's own options)."""
    return [
        name
        for name, p in inspect.signature(function).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    ]


def check_options(
    builder: str,
    given: Iterable[str],
    known: Iterable[str],
    misplaced: dict[str, tuple[str, str]] | None = None,
) -> None:
    """Raise :class:`OptionError` for the first of ``given`` that is not in ``known``.

    Args:
        builder: name of the builder, for the message.
        given: the option names passed.
        known: the builder's public options (listed in the message, sorted).
        misplaced: option -> (what it is, advice), for options of another builder (e.g.
            PointRend options given to a baseline): their message instead of "unknown".
    """
    known = sorted(set(known))
    for option in given:
        if option in known:
            continue
        if misplaced and option in misplaced:
            raise OptionError(builder, option, *misplaced[option])
        close = difflib.get_close_matches(option, known, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise OptionError(builder, option, "an unknown option", f"{hint}known: {', '.join(known)}")
