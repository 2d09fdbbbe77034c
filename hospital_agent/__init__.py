"""The hospital agent: a long-running site service that trains locally and pushes masked FAM updates.

Modules: ``settings`` (configuration), ``adapters`` (site data), ``client`` (gRPC with retries),
``heartbeat``, ``state`` (what survives a restart), ``session`` (per-run preparation: backbone, embeddings),
``trainer`` (local round → update; evaluation), ``publish`` (bundles for the inference API), ``loop`` (the
service), ``cli`` (``run``, ``embed``, ``status``). Only FAM update bytes, sample counts and aggregate metrics
ever leave the site (docs/design.md §1). Importing this package is cheap: torch, open_clip and grpc load only when
a command needs them.
"""
