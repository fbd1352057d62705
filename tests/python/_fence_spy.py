"""A recorder for the adapters' GPU fence (processfork.h "GPU fences") and the sealing calls
it must precede. Both the fence and the ``Client`` methods still run: the recorder wraps them
to note the order, it replaces no behaviour."""
from __future__ import annotations

from typing import Iterable

import processfork
from processfork._integration import fence as fence_mod


def record_fences_and_seals(monkeypatch, adapter_module, seals: Iterable[str]) -> list:
    """Returns the list that receives, in call order, ``("fence", device, waited)`` for each
    fence ``adapter_module`` makes and ``(name,)`` for each ``Client.<name>`` in ``seals``."""
    events: list = []

    def fence(device):
        waited = fence_mod.fence(device)
        events.append(("fence", str(device), waited))
        return waited

    monkeypatch.setattr(adapter_module, "fence", fence)
    for name in seals:
        real = getattr(processfork.Client, name)

        def seal(self, *args, _real=real, _name=name, **kwargs):
            events.append((_name,))
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(processfork.Client, name, seal)
    return events
