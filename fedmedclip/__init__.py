"""FedMedCLIP core library: the method (model, training, federation) and shared plumbing.

Method code in ``model``, ``training`` and ``federation`` does no network or database I/O.
"""

__version__ = "0.1.0"

# Wire-protocol version (major, minor). A major mismatch is refused; minor versions are compatible.
PROTOCOL_VERSION = (1, 0)
