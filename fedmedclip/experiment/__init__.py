"""The experiment harness: reproduce the paper's protocol (FedMedCLIP vs baselines and ablations) in-process.

``config.load_config`` reads a YAML file; ``runner.run_experiment`` runs it and writes ``results.json`` and
``results.md``. The CLI command is ``cli.experiment``. Nothing is imported here, so that registering the
command does not load torch before it runs.
"""
