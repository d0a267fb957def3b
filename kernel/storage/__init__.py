"""Storage: SQLAlchemy models, engine/session factory, unit of work."""
