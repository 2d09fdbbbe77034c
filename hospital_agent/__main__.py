"""``python -m hospital_agent ...``: the same commands as ``fedmedclip agent ...``."""

from hospital_agent.cli import app

if __name__ == "__main__":
    app(prog_name="hospital_agent")
