"""IG FX tick collector: Lightstreamer ticks -> bid/ask candles in TimescaleDB."""

__version__ = "0.1.0"
