"""``python -m aggregator_service ...``: the same commands as ``fedmedclip aggregator ...``."""

from aggregator_service.cli import app

if __name__ == "__main__":
    app(prog_name="aggregator_service")
