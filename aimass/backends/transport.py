"""The lifecycle shared by transports that many httpx clients use at once (in-process, balancing).

A module of its own so that the remote backend and the balancer, which both build on it, do not
import each other.
"""

from __future__ import annotations

from typing import Self

__all__ = ["SharedTransport"]


class SharedTransport:
    """The httpx transport protocol's lifecycle for transports that outlive the clients using them.

    Duck-typed (subclassing httpx's base classes would import httpx at backend detection). An httpx
    client closes its transport when it closes; a shared transport serves several clients (and
    Models), so ``close``/``aclose`` do nothing and ``shutdown`` releases its resources.
    """

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def close(self) -> None:
        """Clients close their transports; a shared one lives until ``shutdown``."""

    async def aclose(self) -> None:
        """See :meth:`close`."""
