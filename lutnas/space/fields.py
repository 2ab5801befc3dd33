"""Typed reading of the documents users write (space YAML, subnet JSON): one rule per type.

Every value is read through one of the parsers here and every mapping through `Section`, so a wrong
type, a value out of range or a misspelt key is one error line naming the key path, what is allowed
and what arrived (`tiny.yaml: stage 2.se must be true or false, got the string 'maybe'`), never a
traceback and never a key silently ignored. Booleans are not integers here, and a single number is
not a list: `depths: 2` is refused (write `[2]`), since accepting it would hide a slip of the pen.
"""

from __future__ import annotations

import difflib
import numbers
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from lutnas.errors import BadInputError

Parser = Callable[[Any], Any]
REQUIRED: Any = object()  # `Section.get`'s default for a key that must be given


class FieldError(ValueError):
    """A value of the wrong type or range; the message follows the key path ("must be ...")."""


def describe(value: Any) -> str:
    """What arrived, in the document's words: "the string 'three'", "the boolean true", "null"."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, numbers.Integral):
        return f"the integer {int(value)}"
    if isinstance(value, numbers.Real):
        return f"the number {value!r}"
    if isinstance(value, str):
        text = value if len(value) <= 40 else value[:37] + "..."
        return f"the string {text!r}"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        text = repr(list(value))
        return f"the list {text if len(text) <= 40 else text[:37] + '...'}"
    return f"a {type(value).__name__}"


def _is_int(value: Any) -> bool:
    # numbers.Integral: numpy integers too (configs built from encoded rows carry them); the
    # plain-int test first, since the ABC check is most of reading a config (search reads many)
    return type(value) is int or (isinstance(value, numbers.Integral) and not isinstance(value, bool))


def integer(minimum: int = 1, odd: bool = False) -> Callable[[Any], int]:
    """A parser of one integer >= `minimum` (odd if `odd`); raises FieldError otherwise."""
    wanted = "an odd positive integer" if odd else (
        "a positive integer" if minimum == 1 else f"an integer >= {minimum}")

    def parse(value: Any) -> int:
        if not _is_int(value):
            raise FieldError(f"must be an integer, got {describe(value)}")
        if value < minimum or (odd and value % 2 == 0):
            raise FieldError(f"must be {wanted}, got {int(value)}")
        return int(value)

    return parse


def integers(minimum: int = 1, odd: bool = False) -> Callable[[Any], tuple[int, ...]]:
    """A parser of a non-empty list of integers (each as `integer` checks), returned sorted and
    without repeats; a single number is refused with the fix (`[2]`). Raises FieldError."""
    item = integer(minimum, odd)
    wanted = "odd positive integers" if odd else (
        "positive integers" if minimum == 1 else f"integers >= {minimum}")

    def parse(value: Any) -> tuple[int, ...]:
        if _is_int(value):
            raise FieldError(f"must be a list of {wanted}, got {describe(value)} (write [{value}])")
        if not isinstance(value, list | tuple) or not value:
            raise FieldError(f"must be a non-empty list of {wanted}, got {describe(value)}")
        for position, raw in enumerate(value, start=1):
            try:
                item(raw)
            except FieldError:
                raise FieldError(f"must be a list of {wanted}; item {position} is "
                                 f"{describe(raw)}") from None
        return tuple(sorted({int(v) for v in value}))

    return parse


def boolean(value: Any) -> bool:
    """A real boolean (YAML/JSON true or false); raises FieldError for anything else, "false" too."""
    if not isinstance(value, bool):
        raise FieldError(f"must be true or false, got {describe(value)}")
    return value


def text(value: Any) -> str:
    """A non-empty string; raises FieldError otherwise (`name: 2024` needs quotes)."""
    if not isinstance(value, str) or not value.strip():
        hint = " (put it in quotes)" if isinstance(value, int | float) else ""
        raise FieldError(f"must be a non-empty string, got {describe(value)}{hint}")
    return value


def one_of(choices: Collection[Any]) -> Parser:
    """A parser of one value among `choices` (compared by type too: 1 is not true)."""
    def parse(value: Any) -> Any:
        if not any(type(value) is type(c) and value == c for c in choices):
            close = difflib.get_close_matches(value, [str(c) for c in choices], n=1) \
                if isinstance(value, str) else []
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise FieldError(f"must be one of {', '.join(map(str, choices))}, got "
                             f"{describe(value)}{hint}")
        return value

    return parse


def items(what: str) -> Parser:
    """A parser of a non-empty list (`what` says of what, for the message); raises FieldError."""
    def parse(value: Any) -> list[Any]:
        if not isinstance(value, list | tuple) or not value:
            raise FieldError(f"must be a non-empty list of {what}, got {describe(value)}")
        return list(value)

    return parse


def unknown_keys(raw: Mapping[Any, Any], allowed: Collection[str], place: str) -> str | None:
    """"unknown key 'hiden' in head; did you mean 'hidden'? allowed keys: expand, hidden" when
    `raw` has keys outside `allowed` (place: "in head"); None when it has none."""
    bad = [key for key in raw if key not in allowed]
    if not bad:
        return None
    close = {key: difflib.get_close_matches(str(key), list(allowed), n=1) for key in bad}
    guesses = [(key, match[0]) for key, match in close.items() if match]
    if len(bad) == 1 and guesses:
        hint = f"; did you mean {guesses[0][1]!r}?"
    elif guesses:
        hint = "; did you mean " + ", ".join(f"{m!r} for {k!r}" for k, m in guesses) + "?"
    else:
        hint = ";"
    return (f"unknown key{'s' if len(bad) > 1 else ''} {', '.join(repr(k) for k in bad)} {place}"
            f"{hint} allowed keys: {', '.join(allowed)}")


@dataclass(frozen=True)
class Section:
    """One mapping of a document, whose keys are read with typed parsers.

    source: the document ("tiny.yaml", "subnet config"); where: the mapping's place in it ("head",
    "stage 2"; "" at the top); error: the BadInputError subclass raised for this document."""

    raw: Mapping[str, Any]
    source: str
    where: str
    error: type[BadInputError]
    allowed: tuple[str, ...] = ()

    @classmethod
    def of(cls, raw: Any, source: str, where: str, allowed: Collection[str],
           error: type[BadInputError], label: str = "") -> Section:
        """`raw` as a section whose keys must be among `allowed`. label: how the unknown-key
        message calls the mapping (default `where`). Raises `error` for a non-mapping or, naming
        each key, the close match and the allowed keys, for an unknown key."""
        if not isinstance(raw, Mapping):
            empty = " (the document is empty)" if raw is None and not where else ""
            raise error(f"{source}: {where or 'the top level'} must be a mapping of keys "
                        f"({', '.join(allowed)}), got {describe(raw)}{empty}")
        unknown = unknown_keys(raw, allowed, f"in {label or where}" if where else "at the top level")
        if unknown:
            raise error(f"{source}: {unknown}")
        return cls(raw, source, where, error, tuple(allowed))

    def path(self, key: str) -> str:
        """`tiny.yaml: head.hidden`: where the key lives, for messages."""
        return f"{self.source}: {self.where}.{key}" if self.where else f"{self.source}: {key}"

    def value(self, key: str, default: Any = REQUIRED) -> Any:
        """The raw value of `key`, or `default`; raises `self.error` for a missing required key."""
        if key in self.raw:
            return self.raw[key]
        if default is REQUIRED:
            place = f" in {self.where}" if self.where else ""
            raise self.error(f"{self.source}: missing required key {key!r}{place}; add it "
                             f"(allowed keys: {', '.join(self.allowed)})")
        return default

    def section(self, key: str, allowed: Collection[str], default: Any = REQUIRED,
                label: str = "") -> Section:
        """The mapping under `key` as a Section (see `of`); raises `self.error` when it is
        missing and required, not a mapping, or holds an unknown key."""
        where = f"{self.where}.{key}" if self.where else key
        return Section.of(self.value(key, default), self.source, where, allowed, self.error, label)

    def get(self, key: str, parse: Parser, default: Any = REQUIRED) -> Any:
        """The parsed value of `key` (or of `default` when absent). Raises `self.error` naming the
        key path for a missing required key or a value `parse` refuses (FieldError, or the
        ValueError/TypeError of a parser a plug-in registered)."""
        value = self.value(key, default)
        try:
            return parse(value)
        except FieldError as exc:
            raise self.error(f"{self.path(key)} {exc}") from None
        except (TypeError, ValueError) as exc:
            raise self.error(f"{self.path(key)}: {describe(value)} is not accepted ({exc})") from None
