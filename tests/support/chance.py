"""An exact :class:`~modelport.serving.routes.Chance` for split and shadow tests."""

from __future__ import annotations


class Cycle:
    """Draws every point in turn: ``randrange(n)`` gives 0, 1, ..., n-1, 0, ...; ``random()`` gives
    0.00, 0.01, ..., 0.99, 0.00, .... Over ``FULL`` (100) requests a split of weight w sends exactly
    w of them to its version, and a shadow of fraction f mirrors exactly 100 * f."""

    def __init__(self) -> None:
        self.ranges = 0
        self.randoms = 0

    def randrange(self, stop: int, /) -> int:
        value = self.ranges % stop
        self.ranges += 1
        return value

    def random(self) -> float:
        value = (self.randoms % 100) / 100
        self.randoms += 1
        return value
