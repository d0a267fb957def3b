"""Money: transactions and approvals, broker settings, payment routing and gateways,
ledger reports (seed sections 7, 8, 9, 10 and 21's ``maker_checker_enabled``)."""
