"""Domain code for the F&O DMF integration: settings, F&O clients, package format, storage.

Nothing in this package imports Azure Functions: it runs the same in an activity, a test or a script.
"""
