"""``python -m inference_api serve --host H --port N [--config FILE]``."""

from inference_api.cli import app

app(prog_name="python -m inference_api")
