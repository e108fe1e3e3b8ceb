"""The process's clock as a request dependency (``ClockDep``).

Routes stamp and default their times from the same ``Clock`` the services run on
(``runtime.clock``: the system clock in ``pharos serve``, the demo's accelerated
clock in the demo, a stepped clock in tests), never from ``datetime.now``: an alert
acknowledged through the API is never stamped before it was raised, and the IOC
summary's "now" is the readings' now.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from pharos.api.deps import RuntimeDep
from pharos_core.clock import Clock


def get_clock(runtime: RuntimeDep) -> Clock:
    return runtime.clock


ClockDep = Annotated[Clock, Depends(get_clock)]
