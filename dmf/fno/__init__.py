"""Dynamics 365 F&O client: auth, one HTTP session, the DMF Package API and the Recurring Integration API.

No Azure Functions imports here: activities call ``dmf.fno.clients.package_api`` / ``recurring_api``.
"""
