"""One module per migration, in ``down_revision`` order."""
