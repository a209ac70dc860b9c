"""Names, aliases and references: the one grammar of the model library (the CLI parses with it too).

* a **name** is letters, digits, ``_ . -``, starting with a letter or digit, no ``..``, at most 128
  characters: it is a directory of the library, so it can never be a path;
* an **alias** is a word starting with a letter (``production``, ``canary-1``), so ``3`` is always a
  version; ``latest`` is reserved for the newest version;
* a **reference** is a name with an optional selector, a version number or an alias::

      fraud                        the newest version (also fraud:latest)
      fraud:3   fraud@3            version 3
      fraud:production             the alias production (also fraud@production)
      store://fraud@production     the same forms behind store://, where /3 also means version 3

  Anything else (``fraud/3``, ``../x``) is refused with :class:`~aimass.errors.StoreError`.

:func:`to_ref` reads a string that must be a reference (``aimass store show``, :func:`aimass.store.load`);
:func:`parse_ref` decides whether a string given to ``Model.load`` is one at all: ``store://...``
always, ``name:version`` and ``name:alias`` unless a file of that name exists, nothing else.

Example:
    >>> to_ref("fraud@production"), to_ref("store://fraud/3")
    (Ref(name='fraud', version=None, alias='production'), Ref(name='fraud', version=3, alias=None))
    >>> to_ref("fraud/3")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    aimass.errors.StoreError: invalid model reference 'fraud/3': ...
"""

from __future__ import annotations

import dataclasses
import os
import random
import re
from collections.abc import Mapping

from aimass.errors import StoreError

__all__ = [
    "SCHEME",
    "Ref",
    "check_alias",
    "check_name",
    "is_alias",
    "is_name",
    "parse_ref",
    "pick_version",
    "to_ref",
]

SCHEME = "store://"
LATEST = "latest"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_ALIAS = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")  # starts with a letter: never mistaken for a version
_SHORT_REF = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_.-]{0,127}):([A-Za-z0-9][A-Za-z0-9_.-]{0,63})$")
_NAME_RULE = "letters, digits, '_', '.', '-', starting with a letter or digit, no '..', at most 128 characters"
_FORMS = "name, name:version, name:alias, name@alias or store://name[/version|@alias]"


def is_name(text: object) -> bool:
    """Whether ``text`` is a valid model name (see :func:`check_name`)."""
    return isinstance(text, str) and bool(_NAME.match(text)) and ".." not in text


def is_alias(text: object) -> bool:
    """Whether ``text`` is a valid alias (see :func:`check_alias`)."""
    return isinstance(text, str) and bool(_ALIAS.match(text)) and ".." not in text and text != LATEST


def check_name(name: str) -> str:
    """Validate a model name: letters, digits, ``_ . -``, starting with a letter or digit (no paths).

    Example:
        >>> check_name("fraud-v2")
        'fraud-v2'
    """
    if not is_name(name):
        raise StoreError(f"invalid model name {name!r}: use {_NAME_RULE}")
    return name


def check_alias(alias: str) -> str:
    """Validate an alias: a word starting with a letter (``production``, ``staging``, ``canary-1``).

    Example:
        >>> check_alias("production")
        'production'
    """
    if not is_alias(alias):
        raise StoreError(
            f"invalid alias {alias!r}: use a word starting with a letter (letters, digits, '_', '.', '-'); "
            "'latest' is reserved for the newest version"
        )
    return alias


@dataclasses.dataclass(frozen=True)
class Ref:
    """A reference to a model in the library: a name plus a version, an alias, or neither (latest).

    Example:
        >>> str(Ref("fraud", version=3)), Ref("fraud", alias="production").selector
        ('fraud:3', 'production')
    """

    name: str
    version: int | None = None
    alias: str | None = None

    @property
    def selector(self) -> int | str | None:
        """What :meth:`Store.resolve <aimass.store.Store.resolve>` takes: the version, the alias, or None (latest)."""
        return self.version if self.version is not None else self.alias

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.name}:{self.version}"
        return f"{self.name}@{self.alias}" if self.alias else self.name


def _ref(name: str, selector: str | None) -> Ref:
    check_name(name)
    if selector is None or selector in ("", LATEST):
        return Ref(name)
    if selector.isdigit():
        return Ref(name, version=int(selector))
    return Ref(name, alias=check_alias(selector))


def to_ref(text: str) -> Ref:
    """Parse a reference in any of its forms (module docstring); StoreError for anything else.

    Example:
        >>> to_ref("fraud"), to_ref("fraud:3")
        (Ref(name='fraud', version=None, alias=None), Ref(name='fraud', version=3, alias=None))
    """
    if not isinstance(text, str):
        raise StoreError(f"invalid model reference {text!r}: use {_FORMS}")
    body, url = (text[len(SCHEME) :].rstrip("/"), True) if text.startswith(SCHEME) else (text, False)
    seps = ":@/" if url else ":@"
    cut = min((i for i in (body.find(s) for s in seps) if i >= 0), default=-1)
    name, selector = (body, None) if cut < 0 else (body[:cut], body[cut + 1 :])
    if not is_name(name):
        raise StoreError(f"invalid model reference {text!r}: use {_FORMS} (a name is {_NAME_RULE})")
    return _ref(name, selector)


def parse_ref(source: str) -> Ref | None:
    """A store reference in ``source``, or None when it is something else (a path, another URL).

    ``store://...`` is always a reference (and refused when malformed); ``name:version`` and
    ``name:alias`` are references unless a file or directory of that name exists.

    Example:
        >>> parse_ref("store://fraud@production"), parse_ref("fraud:3"), parse_ref("model.onnx")
        (Ref(name='fraud', version=None, alias='production'), Ref(name='fraud', version=3, alias=None), None)
    """
    if source.startswith(SCHEME):
        return to_ref(source)
    if _SHORT_REF.match(source) and not os.path.exists(source):
        return to_ref(source)
    return None


def pick_version(weights: Mapping[int, float], rng: random.Random | None = None) -> int:
    """One version drawn by weight: ``{3: 0.9, 4: 0.1}`` gives 4 about one time in ten.

    Example:
        >>> pick_version({3: 1.0})
        3
    """
    versions = sorted(weights)
    if len(versions) == 1:
        return versions[0]
    draw = (rng or random).random() * sum(weights[v] for v in versions)
    for v in versions:
        draw -= weights[v]
        if draw < 0:
            return v
    return versions[-1]
