"""Keyword options of the model builders: refuse the ones a builder does not take, by name.

torchvision's builders pass unknown keyword arguments on and ignore them; this library's
builders check them first and raise :class:`OptionError`, which names the option, lists the
builder's public options and suggests the closest one. The engine rewords it for a config file
(:meth:`OptionError.located`).

Options have one name each (``docs/models.md``, "Options"). :data:`RENAMED_OPTIONS` maps the
names of earlier releases to today's: a builder refuses an old name with a message that gives the
new one, and a checkpoint's stored config is read through the same table
(:func:`current_option_names`), so checkpoints written with the old names still load.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterable

__all__ = [
    "OptionError",
    "RENAMED_OPTIONS",
    "check_options",
    "current_option_names",
    "keyword_options",
]

RENAMED_OPTIONS = {  # an option's name in earlier releases -> its name now
    "mask_subdivision_steps": "subdivision_steps",
    "mask_subdivision_points": "subdivision_num_points",
    "mask_train_num_points": "train_num_points",
    "mask_train_point_sampling": "train_point_sampling",
    "mask_oversample_ratio": "oversample_ratio",
    "mask_importance_sample_ratio": "importance_sample_ratio",
    "mask_conv_dim": "coarse_head_conv_dim",
    "mask_fc_dim": "coarse_head_fc_dim",
    "fc_dim": "point_head_fc_dim",  # the semantic builders' point head
    "num_fc": "point_head_num_fc",
    "coarse_pred_each_layer": "point_head_coarse_pred_each_layer",
}


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


def current_option_names(options: dict, where: str = "options") -> dict:
    """``options`` with every old name of :data:`RENAMED_OPTIONS` replaced by its new one (for
    configs written before the renaming: a checkpoint's); a ``ValueError`` naming ``where`` when
    an option is given under both names."""
    renamed = {RENAMED_OPTIONS.get(name, name): value for name, value in options.items()}
    if len(renamed) < len(options):
        both = sorted(old for old in options if RENAMED_OPTIONS.get(old) in options)
        raise ValueError(
            f"{where}: {both[0]!r} and {RENAMED_OPTIONS[both[0]]!r} are one option "
            f"(the old and the new name); keep {RENAMED_OPTIONS[both[0]]!r}"
        )
    return renamed


def check_options(
    builder: str,
    given: Iterable[str],
    known: Iterable[str],
    misplaced: dict[str, tuple[str, str]] | None = None,
) -> None:
    """Raise :class:`OptionError` for the first of ``given`` that is not in ``known``: an old
    name (:data:`RENAMED_OPTIONS`) with its new name, another builder's option with ``misplaced``'s
    advice, any other with the closest known name.

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
        if option in RENAMED_OPTIONS:
            new = RENAMED_OPTIONS[option]
            raise OptionError(builder, option, "a renamed option", f"its name is now {new!r}")
        if misplaced and option in misplaced:
            raise OptionError(builder, option, *misplaced[option])
        close = difflib.get_close_matches(option, known, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise OptionError(builder, option, "an unknown option", f"{hint}known: {', '.join(known)}")
