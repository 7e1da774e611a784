"""Tether: take an open-weight model from raw to aligned and audited, and measure what alignment cost."""

__version__ = "0.1.0"
