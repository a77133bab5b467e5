"""Indicators (studies) over the merged candle series.

- ``studies``: :func:`~trading_helper.indicators.studies.parse_study` /
  :func:`~trading_helper.indicators.studies.parse_studies` turn specs (``ema:20``,
  ``supertrend:10:3``, ``vwap``) into :class:`~trading_helper.indicators.studies.Study` objects, or
  raise :class:`~trading_helper.errors.InvalidStudy`; ``Study.compute(Bars.of(candles, tf))`` gives
  every output over a series; ``Study.warmup(tf)`` the bars it needs before the first value.
- ``incremental``: :class:`~trading_helper.indicators.incremental.StudyUpdater` carries one study
  forward (``close(candle)`` per closed bar, ``forming(candle)`` for the bar still forming).
- ``series``: :func:`~trading_helper.indicators.series.study_series` reads a range with its
  warm-up through the candle service (``GET /api/indicators``).
"""
