"""``python -m fedmedclip.experiment --config exp.yaml`` (the same command as ``fedmedclip experiment``)."""

from fedmedclip.experiment.cli import main

main()
