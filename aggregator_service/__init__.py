"""The FedMedCLIP aggregator: gRPC rounds, FAM versions in a database, site auth (DESIGN.md §4–§6).

Layers: ``servicer`` (gRPC transport) → ``handlers``, ``admin`` and ``rounds`` (plain logic) → ``store`` (the
``Store`` interface and its SQLAlchemy implementation). ``server`` wires them into a process and ``cli``
is the ``fedmedclip aggregator`` command group. This package imports ``fedmedclip`` and nothing of the
other services.
"""
