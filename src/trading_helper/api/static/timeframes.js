// Generated from trading_helper/timeframes.py by `python -m trading_helper.timeframes`: do not edit.
window.TH_TIMEFRAMES = Object.freeze({"originMs": 946838700000, "widthMs": {"1m": 60000, "5m": 300000, "15m": 900000, "1h": 3600000, "1d": 86400000}, "stepMs": {"1m": 172800000, "5m": 864000000, "15m": 2592000000, "1h": 10368000000, "1d": 129600000000}});
