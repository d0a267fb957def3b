"""Risk-rule plugins (pre-trade checks and per-tick account checks)."""
