"""DMF data package format: manifest model, source formats, raw file → package, validation, batches.

Domain code only (no Azure Functions imports); activities call it. See ``README.md`` in this folder.
"""
