"""Outbound (placeholder: being written)."""

import azure.durable_functions as df

bp = df.Blueprint()
