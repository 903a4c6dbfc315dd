"""The optional extras: importing what needs one without it says which extra to install."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

DISTRIBUTION = "langfuse-openrouter-callbacks"


class MissingExtra(ImportError):
    """What an adapter or the demo imports is not installed; the message says what to `pip install`."""

    def __init__(self, needed_by: str, extra: str, reason: str) -> None:
        super().__init__(
            f'{needed_by} needs the "{extra}" extra ({reason}): pip install "{DISTRIBUTION}[{extra}]"'
        )
        self.extra, self.reason = extra, reason


@contextmanager
def requires_extra(extra: str, needed_by: str) -> Iterator[None]:
    """Around the imports `needed_by` takes from `extra`: an ImportError there becomes a `MissingExtra`
    naming the extra to install (a `MissingExtra` from inside, too: the outer extra is the one to name)."""
    try:
        yield
    except ImportError as exc:
        reason = exc.reason if isinstance(exc, MissingExtra) else str(exc)
        raise MissingExtra(needed_by, extra, reason) from exc
