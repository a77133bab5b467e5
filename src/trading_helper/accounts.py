"""Several broker accounts per broker: ``KITE_ACCOUNTS=a,b`` names ``KITE_A_API_KEY``,
``KITE_A_API_SECRET``, ``KITE_A_ACCESS_TOKEN``, ``KITE_B_...`` (Fyers: ``FYERS_ACCOUNTS`` naming
``FYERS_<NAME>_APP_ID``, ``_SECRET_KEY``, ``_ACCESS_TOKEN``).

Without a ``<BROKER>_ACCOUNTS`` list, the single-account settings (``KITE_API_KEY`` ...) are one
account named ``default``, as before. Each account has its own token file: the default account's
is where it always was (``TOKEN_DIR/kite.token``), account ``a``'s is ``TOKEN_DIR/a/kite.token``
(``trading-helper login kite --account a`` writes it).

This module reads names and values only; :class:`trading_helper.config.Settings` calls it with the
environment and ``.env`` and turns an account into the settings of its broker adapter.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pydantic import SecretStr

DEFAULT_ACCOUNT = "default"
#: per broker: the variable naming its accounts, and each account's variables (key first, required)
ACCOUNT_LIST = {"kite": "KITE_ACCOUNTS", "fyers": "FYERS_ACCOUNTS"}
ACCOUNT_SUFFIXES = {
    "kite": ("API_KEY", "API_SECRET", "ACCESS_TOKEN"),
    "fyers": ("APP_ID", "SECRET_KEY", "ACCESS_TOKEN"),
}
_NAME = re.compile(r"^[A-Za-z0-9]{1,32}$")


@dataclass(frozen=True, slots=True)
class Account:
    broker: str
    name: str
    #: the API key (Kite) or app id (Fyers)
    key: str
    secret: SecretStr
    access_token: SecretStr

    @property
    def is_default(self) -> bool:
        return self.name == DEFAULT_ACCOUNT


def account_names(broker: str, listed: str) -> list[str]:
    """The names of a ``<BROKER>_ACCOUNTS`` value, checked: letters and digits, each once."""
    names = [n.strip().lower() for n in listed.split(",") if n.strip()]
    for name in names:
        if not _NAME.match(name) or name == DEFAULT_ACCOUNT:
            raise ValueError(
                f"{ACCOUNT_LIST[broker]}: account name {name!r} must be 1-32 letters or digits "
                f"(and not {DEFAULT_ACCOUNT!r}, the name of the single-account settings)"
            )
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ValueError(f"{ACCOUNT_LIST[broker]}: {', '.join(duplicated)} listed twice")
    return names


def account_variable(broker: str, name: str, suffix: str) -> str:
    return f"{broker.upper()}_{name.upper()}_{suffix}"


def parse_accounts(broker: str, listed: str, values: Mapping[str, str]) -> tuple[Account, ...]:
    """The accounts ``listed`` (a ``<BROKER>_ACCOUNTS`` value) names, from ``values`` (the
    environment over ``.env``); ValueError naming the first missing key variable."""
    key_suffix, secret_suffix, token_suffix = ACCOUNT_SUFFIXES[broker]
    out = []
    for name in account_names(broker, listed):
        key = values.get(account_variable(broker, name, key_suffix), "").strip()
        if not key:
            raise ValueError(
                f"{ACCOUNT_LIST[broker]} names account {name!r} but "
                f"{account_variable(broker, name, key_suffix)} is not set"
            )
        secret = values.get(account_variable(broker, name, secret_suffix), "")
        token = values.get(account_variable(broker, name, token_suffix), "")
        out.append(Account(broker, name, key, SecretStr(secret.strip()), SecretStr(token.strip())))
    return tuple(out)


def account_variables(values: Mapping[str, str]) -> set[str]:
    """Every per-account variable name the ``<BROKER>_ACCOUNTS`` lists in ``values`` give meaning to."""
    known: set[str] = set()
    for broker, list_name in ACCOUNT_LIST.items():
        try:
            names: Iterable[str] = account_names(broker, values.get(list_name, ""))
        except ValueError:
            names = ()  # reported when the settings are read
        known.update(account_variable(broker, n, s) for n in names for s in ACCOUNT_SUFFIXES[broker])
    return known
