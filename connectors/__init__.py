"""One package per external provider (payments, KYC, messaging), each a plugin."""
