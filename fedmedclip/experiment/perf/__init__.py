"""The measurements behind bench/p1–p3 and bench/gpu.py, importable so the scripts stay thin and tested."""
