"""Market data: OHLC bars, FX rates, feed health and outages, and the cluster price path.

* :mod:`.bars` builds M1..D1 bars from every accepted tick and persists them;
* :mod:`.health` reports per-symbol freshness and logs outages (market clock);
* :mod:`.cluster` elects the one process that runs the price feeds and relays its
  ticks, and account-change notices, to every process through Redis pub/sub;
* :mod:`.service` wires them to a :class:`~brokerkernel.kernel.runtime.Kernel`.

Seed section 14 (prices) and section 32 (account stream); the HTTP side lives in
``api/routes/prices.py`` and ``api/routes/streams.py``.
"""
