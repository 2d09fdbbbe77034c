"""Many simulated sites per process, and many processes on Ray (docs/simulation.md, docs/design.md §10)."""
