"""A local stand-in for the Azure Functions host and the Durable extension (never deployed).

Runs the app object exactly as deployed: orchestrations replay through azure-functions-durable's own
orchestrator handle, client functions get the SDK's own ``DurableOrchestrationClient`` talking to a loopback
copy of the extension's HTTP API, and blob / timer / HTTP triggers fire against Azurite.
"""

from .clock import RealClock, VirtualClock
from .engine import InstanceExistsError, NonDeterminismError
from .runner import LocalRunner

__all__ = ["InstanceExistsError", "LocalRunner", "NonDeterminismError", "RealClock", "VirtualClock"]
