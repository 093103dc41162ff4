from app.services.recent_misses import RecentMisses


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_an_id_is_remembered_until_its_ttl_passes() -> None:
    clock = Clock()
    misses = RecentMisses(ttl_seconds=5, clock=clock)
    misses.add("a")
    assert "a" in misses
    assert "b" not in misses
    clock.now += 4.9
    assert "a" in misses
    clock.now += 0.2
    assert "a" not in misses


def test_the_oldest_entries_go_first_when_full() -> None:
    misses = RecentMisses(max_entries=3, clock=Clock())
    for key in "abcd":
        misses.add(key)
    assert "a" not in misses
    assert all(key in misses for key in "bcd")


def test_adding_again_refreshes_and_discard_forgets() -> None:
    clock = Clock()
    misses = RecentMisses(ttl_seconds=5, max_entries=2, clock=clock)
    misses.add("a")
    misses.add("b")
    clock.now += 3
    misses.add("a")  # now the newest
    misses.add("c")  # evicts b, not a
    assert "a" in misses
    assert "b" not in misses
    clock.now += 3
    assert "a" in misses
    misses.discard("a")
    assert "a" not in misses
