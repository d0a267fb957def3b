"""The broker kernel: hooks, plugin manager, config, storage, event bus, cache, clock."""
