"""Rill: agentless, exactly-once log mirroring over SSH, with search and live ZeroMQ streams."""
