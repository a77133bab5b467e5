"""PostgreSQL / TimescaleDB storage: migrations, pool, tick COPY, instruments, candle reads."""
