"""The vectorised risk engine (ARCHITECTURE.md, "Risk engine (the hot path)").

:mod:`~brokerkernel.kernel.risk.engine` re-marks open positions on every tick in NumPy
arrays and compares equity with per-account levels; :mod:`~brokerkernel.kernel.risk.rules`
is the API per-tick account rules (stop-out, margin call, prop-firm floors) implement;
:mod:`~brokerkernel.kernel.risk.rates` keeps the currency conversion rates it marks with.
"""
