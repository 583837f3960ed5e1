"""End-to-end test support: the embedded stack and sample data live in ``local/`` (the demo uses them too)."""

from local.embedded_stack import Stack, app_settings, environ, reset_app_caches
from local.samples import customer_groups_csv, customer_groups_package

__all__ = [
    "Stack",
    "app_settings",
    "customer_groups_csv",
    "customer_groups_package",
    "environ",
    "reset_app_caches",
]
