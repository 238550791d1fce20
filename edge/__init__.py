"""Everything that runs on the device: sources, detectors, triggers, spool, uploader, agent.

Imports third-party packages only, so a Jetson can install `edgeloop[edge]` alone.
"""
