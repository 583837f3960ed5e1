"""Dynamics 365 F&O client: auth, one HTTP session, the DMF Package API and the Recurring Integration API.

No Azure Functions imports here. Entry points (cached per process per environment name)::

    from dmf.fno.clients import package_api, recurring_api
    api = package_api(settings, "main")      # PackageApi
    ra = recurring_api(settings, "main")     # RecurringApi (cloud only)

Modules: ``auth`` (azure-identity credentials, token cache), ``http`` (session, timeouts, retry rules),
``errors`` (typed errors), ``models`` (typed results and parsing), ``package_api``, ``recurring_api``,
``transfer`` (streamed downloads), ``clients`` (factory).
"""
