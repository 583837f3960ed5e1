"""Local-only tools: Azurite control, the F&O DMF emulator and the local Functions runner. Never deployed."""
