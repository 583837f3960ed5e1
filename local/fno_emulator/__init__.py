"""Local stand-in of Dynamics 365 F&O's DMF Package API, Recurring Integration API and token endpoints.

Written from the documented contract only (see README.md); it shares no code with the app's F&O client.
"""

from .config import EmulatorConfig
from .emulator import Emulator

__all__ = ["Emulator", "EmulatorConfig"]
