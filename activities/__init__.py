"""Activity functions: thin wrappers that call the domain code in ``dmf``."""
