"""``with`` for objects that own kernel resources: leaving the block closes them."""

from __future__ import annotations

from types import TracebackType
from typing import Self

__all__ = ["Closing"]


class Closing:
    """Mixin: ``__enter__`` gives the object back, ``__exit__`` calls ``close()``, exception or not.

    Every owner of fds, mappings or kernel objects is a context manager so
    that release is explicit; this is the one implementation of that protocol.
    """

    __slots__ = ()

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
