"""``render``'s clock: a file's frames counted at another rate are drawn on the source frame shown then."""

from __future__ import annotations

import numpy as np

from service.commands.render import source_frames


def test_frames_counted_at_another_rate_map_to_the_source_frame_shown_then() -> None:
    assert source_frames([0, 12, 25], 25.0, 25.0000004) == {0: 0, 12: 12, 25: 25}
    assert source_frames([0, 1, 24], 24.0, None) == {0: 0, 1: 1, 24: 24}
    assert source_frames([0, 1, 5, 24], 24.0, 30.0) == {0: 0, 1: 1, 5: 6, 24: 30}
    assert np.all(np.diff(list(source_frames(list(range(100)), 30.0, 25.0).values())) >= 0)
