"""The FedMedCLIP aggregator: gRPC rounds, FAM versions in a database, site auth (docs/design.md §4–§6).

Layers: ``transport`` (gRPC ↔ ``fedmedclip.federation.messages``) → ``federation_handlers``,
``admin_handlers``, ``auth``, ``audit`` and ``rounds`` (plain logic) → ``store`` (the ``Store`` interface and
its SQLAlchemy implementation). ``server`` wires them into a process; ``cli`` (serve) and ``admin_cli``
(sites, runs, versions over ``admin_client``) are the ``fedmedclip aggregator`` command group. This
package imports ``fedmedclip`` and nothing of the other services.
"""
