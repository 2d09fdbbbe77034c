"""``make demo``: the whole federation on one machine, each service a real process (issue "deploy and demo")."""
