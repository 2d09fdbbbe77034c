"""Alembic migrations of the aggregator's database, applied by the service on start (``upgrade head``)."""
