from app.batches import chunks


def test_chunks_keep_order_and_size_and_leave_nothing_out() -> None:
    assert list(chunks("abcdefg", 3)) == [["a", "b", "c"], ["d", "e", "f"], ["g"]]
    assert list(chunks([1, 2], 2)) == [[1, 2]]
    assert list(chunks([], 5)) == []
