from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.pulse import PulseServer, pulse_available, unavailable

RATE = 16000


@pytest.fixture
def pulse(tmp_path: Path) -> Iterator[PulseServer]:
    """A private PulseAudio with a 16 kHz stereo null sink whose monitor is the default source.

    Missing system packages skip the test on a developer's machine; in CI (where
    ./run test installs them) they fail it, so a missing feature never hides.
    """
    reason = pulse_available()
    if reason is not None:
        unavailable(reason)
    with PulseServer(tmp_path / "pulse", samplerate=RATE, channels=2) as server:
        yield server
