"""Indicators (studies) over the merged candle series: ``studies`` parses and computes them,
``incremental`` carries them forward bar by bar, ``series`` reads a range with its warm-up."""
