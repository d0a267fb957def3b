"""Trading domain: margin, profit, orders, positions and the ledger."""
