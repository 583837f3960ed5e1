"""Orchestrator functions (deterministic generators: they only yield context tasks)."""
