"""The aggregator: coordinates rounds and stores FAM versions (issue "Aggregator service")."""
