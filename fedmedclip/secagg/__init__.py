"""Secure aggregation primitives (docs/design.md §6): the aggregator learns only the sum of masked inputs.

Pure functions and in-memory state machines with no I/O, usable by the agent, the aggregator (numpy only, no
torch) and the simulator. Bonawitz et al. 2017 with the SecAgg+ neighbourhood graph of Bell et al. 2020:

- ``keys``: X25519 agreement and HKDF derivation (one derived key per purpose and round);
- ``prg``: the mask stream, ChaCha20 keyed by the full 256-bit derived key;
- ``shamir``: threshold sharing of 32-byte secrets over the Mersenne prime field 2^521 − 1;
- ``aead``: ChaCha20-Poly1305 for the shares that sites send each other through the aggregator;
- ``fixedpoint`` and ``packing``: values as integers modulo 2^b, packed at b bits each;
- ``graph``: the public, seeded k-regular communication graph;
- ``protocol``: the client's four phases and the server's unmasking.
"""
