"""Route modules, one per namespace of the seed API reference."""
