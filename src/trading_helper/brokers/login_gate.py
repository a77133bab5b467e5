"""The login state of a live feed, shared by all its connections (``brokers/connection.py``).

Login: a refused token (HTTP 401/403 on the upgrade, an in-band refusal, an expired token, no
token at all) puts the feed in LOGIN_REQUIRED at once and emits one LOGIN_REQUIRED event with
every subscribed instrument. The connections then wait, polling the token file that
``trading-helper login`` writes (``brokers/tokens.py``) about once a second, and reconnect as soon
as its content or mtime changes: a morning login brings a running feed back without a restart,
and ``run()`` never returns because of a login (a supervisor would take that for a crash).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from trading_helper.brokers.tokens import load_token, token_path
from trading_helper.config import Settings

log = logging.getLogger(__name__)

#: what identifies one stored token: (file mtime in ns or None, the token); a new login changes it
TokenSignature = tuple[int | None, str]


class LoginGate:
    """The feed's login state, shared by all its connections (Kite has up to three)."""

    def __init__(
        self,
        settings: Settings,
        broker: str,
        *,
        poll_s: float,
        on_required: Callable[[str], Awaitable[None]],
        on_change: Callable[[], None],
    ) -> None:
        self._settings = settings
        self._broker = broker
        self._poll_s = poll_s
        self._on_required = on_required
        self._on_change = on_change
        self._refused: TokenSignature | None = None
        #: why a login is needed; None while the stored token is not known to be refused
        self.detail: str | None = None

    @property
    def required(self) -> bool:
        return self.detail is not None

    def _current(self) -> TokenSignature:
        try:
            mtime: int | None = token_path(self._settings, self._broker).stat().st_mtime_ns
        except OSError:
            mtime = None
        return mtime, load_token(self._settings, self._broker)

    async def token(self) -> tuple[str, TokenSignature]:
        """The token to connect with: the stored one; once it was refused, the next new one
        (this waits, polling the token file, as long as it takes)."""
        while True:
            signature = self._current()
            if self.detail is None or signature != self._refused:
                if not signature[1]:
                    await self.refuse(signature, f"no {self._broker} access token stored")
                    continue
                if self.detail is not None:
                    log.info("%s: a new access token was stored; the live feed reconnects", self._broker)
                    self.detail = None
                    self._on_change()
                return signature[1], signature
            await asyncio.sleep(self._poll_s)

    async def refuse(self, signature: TokenSignature, detail: str) -> None:
        """The broker refused the token of ``signature``: report it once per token."""
        if self.detail is not None and signature == self._refused:
            return  # another connection already reported this token
        self._refused, self.detail = signature, detail
        self._on_change()
        log.error(
            "%s login needed: %s; the live feed waits for `trading-helper login %s` and then "
            "resumes by itself",
            self._broker,
            detail,
            self._broker,
        )
        await self._on_required(detail)

    async def check(self) -> None:
        """At start: forget earlier refusals (the token is tried again once, and a refusal is
        reported to this run's sink); no token at all is a login to do, whether or not anything
        is subscribed."""
        self._refused = self.detail = None
        signature = self._current()
        if not signature[1]:
            await self.refuse(signature, f"no {self._broker} access token stored")
