"""The hospital agent: trains locally and pushes masked FAM updates (issue "Hospital agent")."""
