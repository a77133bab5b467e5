"""The soak's candle check: every fully captured candle read through the API against the oracle."""

from __future__ import annotations

from collections import Counter
from datetime import date, datetime, timedelta
from typing import Any

from trading_helper.bench.soak.market import POISON_PRICE, Market, SoakTick
from trading_helper.bench.soak.oracle import IST, WIDTHS, RawTick, candles


def check_candles(
    market: Market,
    days: list[date],
    api_candles: dict[tuple[str, int, datetime], dict[str, Any]],
    received: set[tuple[int, int]],
    all_ticks: dict[tuple[int, int], SoakTick],
) -> tuple[Counter[str], Counter[str], list[dict[str, Any]]]:
    """Every fully captured bucket (each of its trades received, and the trade before it too, so
    its volume is exact; the poison trade counts as not captured) against the oracle."""
    good = {k for k in received if all_ticks[k].price != POISON_PRICE}
    mismatches: Counter[str] = Counter()
    checked: Counter[str] = Counter()
    samples: list[dict[str, Any]] = []
    for day in days:
        day_start = datetime(day.year, day.month, day.day, 0, 15, tzinfo=IST)
        for inst in market.instruments:
            trades = market.trades_between(inst.token, day_start, day_start + timedelta(days=1))
            truth = candles(
                RawTick(datetime.fromtimestamp(t.epoch, IST), inst.token, t.price, t.quantity, None)
                for t in trades
            )
            for (tf, _, bucket), (o, h, lo, c, v, _oi, _n) in truth.items():
                width = WIDTHS[tf]
                inside = market.trades_between(inst.token, bucket, bucket + width)
                before = market.previous_trade(inst.token, bucket)
                if any((t.token, t.epoch) not in good for t in inside) or (
                    before is not None and (before.token, before.epoch) not in good
                ):
                    continue
                checked[tf] += 1
                got = api_candles.get((tf, inst.token, bucket))
                kind = None
                if got is None:
                    kind = "missing"
                elif (
                    max(
                        abs(got["open"] - o),
                        abs(got["high"] - h),
                        abs(got["low"] - lo),
                        abs(got["close"] - c),
                    )
                    > 1e-6
                ):
                    kind = "price"
                elif got["volume"] != v:
                    kind = "volume"
                if kind is not None:
                    mismatches[kind] += 1
                    if mismatches[kind] <= 3:  # a few of each kind
                        samples.append(
                            {
                                "timeframe": tf,
                                "token": inst.token,
                                "bucket": bucket.isoformat(),
                                "kind": kind,
                                "expected": [o, h, lo, c, v],
                                "got": None
                                if got is None
                                else [
                                    got["open"],
                                    got["high"],
                                    got["low"],
                                    got["close"],
                                    got["volume"],
                                    got["source"],
                                ],
                            }
                        )
            # a candle in a fully captured bucket without any trade (quote-only updates) is wrong too
            for (tf, token, bucket), got in api_candles.items():
                if token != inst.token or not day_start <= bucket < day_start + timedelta(days=1):
                    continue
                if (tf, inst.token, bucket) in truth:
                    continue
                quotes = [
                    k
                    for k in all_ticks
                    if k[0] == token and bucket.timestamp() <= k[1] < (bucket + WIDTHS[tf]).timestamp()
                ]
                if quotes and all(k in good for k in quotes):
                    checked[tf] += 1
                    mismatches["candle_without_trade"] += 1
                    if mismatches["candle_without_trade"] <= 3:
                        samples.append(
                            {
                                "timeframe": tf,
                                "token": token,
                                "bucket": bucket.isoformat(),
                                "kind": "candle_without_trade",
                                "got": got,
                            }
                        )
    return mismatches, checked, samples


def ranges(keys: set[tuple[int, int]], limit: int = 12) -> list[dict[str, Any]]:
    """Ticks (token, epoch) grouped into runs with no more than a minute between them, for diagnosis."""
    out: list[dict[str, Any]] = []
    for epoch in sorted(e for _, e in keys):
        if out and epoch - out[-1]["_last"] <= 60:
            out[-1]["_last"], out[-1]["ticks"] = epoch, out[-1]["ticks"] + 1
        else:
            out.append({"_first": epoch, "_last": epoch, "ticks": 1})
    return [
        {
            "from": datetime.fromtimestamp(r["_first"], IST).isoformat(timespec="seconds"),
            "to": datetime.fromtimestamp(r["_last"], IST).isoformat(timespec="seconds"),
            "ticks": r["ticks"],
        }
        for r in out[:limit]
    ]
