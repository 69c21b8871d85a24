"""Errors a user can cause or meet, each with a stable code, a message and a hint.

The code travels over the plug-in protocol, so the plug-in can tell failures apart without
importing the engine. Messages say what happened; hints say what to do. Torch-free.
"""

from __future__ import annotations


class EngineError(Exception):
    """Base class: ``str(err)`` is the message a user reads; ``hint`` what to do about it."""

    code = "engine_error"

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def user_text(self) -> str:
        return f"{self.message}\n{self.hint}" if self.hint else self.message


class WeightsMissing(EngineError):
    code = "weights_missing"


class WeightsInvalid(EngineError):
    code = "weights_invalid"


class DeviceUnavailable(EngineError):
    code = "device_unavailable"


class OutOfMemory(EngineError):
    code = "out_of_memory"


class NumericalError(EngineError):
    code = "numerical_error"


class Cancelled(EngineError):
    code = "cancelled"


class PresetError(EngineError):
    code = "preset_error"


class InvalidInput(EngineError):
    code = "invalid_input"


class FlowUnavailable(EngineError):
    """The optical-flow library (OpenCV) that animations need is missing or broken."""
    code = "flow_unavailable"


#: What a user runs to get the flow library into the engine's Python (``transfer.flow``,
#: ``doctor``).
OPENCV_HINT = ("Animation needs OpenCV in the engine's Python: re-run `python install.py` (it "
               "installs it), or `<engine python> -m pip install opencv-python-headless` "
               "(Debian: `apt install python3-opencv`).")
