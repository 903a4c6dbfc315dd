"""The package's logger and a collector that turns many small problems into one warning per kind."""

from __future__ import annotations

import logging

logger = logging.getLogger("langfuse_openrouter_callbacks")


class Problems:
    """Problems found while reading one input, reported as one warning per kind.

    `kind` is a short phrase ("not a non-negative number"); the details are the fields it hit.
    """

    __slots__ = ("_by_kind", "_what")

    def __init__(self, what: str) -> None:
        self._what = what
        self._by_kind: dict[str, list[str]] = {}

    def add(self, kind: str, detail: str) -> None:
        self._by_kind.setdefault(kind, []).append(detail)

    def __bool__(self) -> bool:
        return bool(self._by_kind)

    def kinds(self) -> list[str]:
        return list(self._by_kind)

    def report(self) -> None:
        for kind, details in self._by_kind.items():
            logger.warning("%s: %s: %s", self._what, kind, ", ".join(details))


def log_exception_once(seen: set[str], key: str, message: str) -> None:
    """Log the exception being handled, with its traceback, the first time `key` enters `seen`.

    Later ones go to debug level, so a broken input repeated on every call cannot flood the log.
    """
    if key in seen:
        logger.debug(message, exc_info=True)
        return
    seen.add(key)
    logger.exception(message)
