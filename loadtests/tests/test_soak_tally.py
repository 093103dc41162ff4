"""How loadtests/soak.py counts answers and judges a run (no server involved)."""

from __future__ import annotations

from app.services.invariant import DropCheck
from loadtests import soak_tally as t
from loadtests.soak_shoppers import Pacer
from loadtests.soak_tally import Answer, DropBook, Tally

BOUGHT = Answer(201, None, {"id": "p1", "reservationId": "r1"})
AGAIN = Answer(200, None, {"id": "p1", "reservationId": "r1"})
EXPIRED = Answer(410, "RESERVATION_EXPIRED", {"code": "RESERVATION_EXPIRED"})
CANCELLED = Answer(409, "RESERVATION_CANCELLED", {"code": "RESERVATION_CANCELLED"})
PURCHASED = Answer(409, "RESERVATION_PURCHASED", {"code": "RESERVATION_PURCHASED"})
GONE = Answer(204, None)
NO_ANSWER = Answer(0, "ServerDisconnectedError")
BROKEN = Answer(500, "INTERNAL_ERROR", {"code": "INTERNAL_ERROR"})


def tally_of(*answers: tuple[str, Answer]) -> Tally:
    tally = Tally()
    for route, answer in answers:
        tally.record(route, answer, 1_000_000)
    return tally


def test_answers_are_counted_by_route_status_and_code() -> None:
    tally = tally_of(
        (t.RESERVE, Answer(201, None)),
        (t.RESERVE, Answer(409, "SOLD_OUT")),
        (t.RESERVE, Answer(409, "SOLD_OUT")),
        (t.PURCHASE, BROKEN),
        (t.LIST, NO_ANSWER),
    )
    assert tally.outcomes[(t.RESERVE, 409, "SOLD_OUT")] == 2
    assert tally.outcomes[(t.RESERVE, 201, None)] == 1
    assert t.server_errors(tally.outcomes) == 1
    assert t.connection_errors(tally.outcomes) == 1
    window = tally.take_window()
    assert (window.requests, window.server_errors, window.connection_errors) == (5, 1, 1)
    assert window.reserves == {"201": 1, "SOLD_OUT": 2}
    assert tally.take_window().requests == 0  # a new window after each progress line
    assert len(tally.error_samples) == 2


def test_unexpected_answers_are_the_ones_outside_their_routes_set() -> None:
    tally = tally_of(
        (t.RESERVE, Answer(409, "SOLD_OUT")),  # expected
        (t.RESERVE, Answer(429, "RATE_LIMITED")),  # limits are off in a soak
        (t.PURCHASE, Answer(404, "RESERVATION_NOT_FOUND")),  # the shopper's own hold
        (t.PURCHASE_LATE, EXPIRED),  # expected
        (t.CANCEL, BROKEN),  # a 5xx, counted apart
        (t.CANCEL, NO_ANSWER),  # no answer, counted apart
    )
    assert t.unexpected(tally.outcomes) == [
        ((t.PURCHASE, 404, "RESERVATION_NOT_FOUND"), 1),
        ((t.RESERVE, 429, "RATE_LIMITED"), 1),
    ]


def test_a_repeated_purchase_must_name_the_same_purchase() -> None:
    assert t.repeat_problem(BOUGHT, AGAIN) is None
    assert t.repeat_problem(EXPIRED, EXPIRED) is None
    assert "p2" in (t.repeat_problem(BOUGHT, Answer(200, None, {"id": "p2"})) or "")
    assert t.repeat_problem(BOUGHT, BOUGHT) is not None  # created twice
    assert t.repeat_problem(EXPIRED, AGAIN) is not None  # refused, then sold
    assert t.repeat_problem(BOUGHT, NO_ANSWER) is None  # an error, counted elsewhere


def test_two_purchases_at_once_create_one_purchase() -> None:
    assert t.pair_problem(BOUGHT, AGAIN) is None
    assert t.pair_problem(AGAIN, BOUGHT) is None
    assert t.pair_problem(EXPIRED, EXPIRED) is None
    assert t.pair_problem(BOUGHT, BOUGHT) is not None
    assert t.pair_problem(AGAIN, AGAIN) is not None
    assert t.pair_problem(BOUGHT, Answer(200, None, {"id": "p2"})) is not None


def test_an_idempotent_replay_repeats_the_first_answer() -> None:
    assert t.replay_problem(BOUGHT, BOUGHT) is None
    assert t.replay_problem(EXPIRED, EXPIRED) is None
    assert t.replay_problem(BOUGHT, AGAIN) is not None  # status differs
    assert t.replay_problem(BOUGHT, Answer(201, None, {"id": "p2"})) is not None
    assert t.replay_problem(BROKEN, BOUGHT) is None  # a 5xx is not remembered


def test_a_purchase_racing_a_cancel_has_one_winner() -> None:
    assert t.race_problem(BOUGHT, PURCHASED) is None
    assert t.race_problem(CANCELLED, GONE) is None
    assert t.race_problem(BOUGHT, GONE) is not None
    assert t.race_problem(CANCELLED, PURCHASED) is not None


def test_a_purchase_after_expiry_must_fail() -> None:
    assert t.late_problem(EXPIRED, 0.4) is None
    assert "0.40 s" in (t.late_problem(BOUGHT, 0.4) or "")


def check(**fields: int | None) -> DropCheck:
    values: dict[str, int | None] = {
        "total_pg": 300,
        "sold_pg": 2,
        "total": 300,
        "available": 298,
        "sold": 2,
        "live_holds": 0,
    }
    values.update(fields)
    return DropCheck("d1", "Drop 1", **values)  # type: ignore[arg-type]


def book(**fields: object) -> dict[str, DropBook]:
    b = DropBook("d1", "Drop 1", initial=200, restocked=100, purchases={"p1", "p2"})
    for name, value in fields.items():
        setattr(b, name, value)
    return {"d1": b}


def test_balanced_books_have_no_problem() -> None:
    assert t.books_problems([check()], book()) == []
    unanswered = book(purchases={"p1"}, purchase_unknown=1)
    assert t.books_problems([check()], unanswered) == []  # an unanswered purchase went through


def test_books_that_do_not_balance_are_named() -> None:
    [lost] = t.books_problems([check(sold_pg=1, sold=1, available=299)], book())
    assert "acknowledged purchases lost" in lost
    [extra] = t.books_problems([check(sold_pg=3, sold=3, available=297)], book())
    assert "3 purchases" in extra
    [restock] = t.books_problems([check(total_pg=250, total=250, available=248)], book())
    assert "expected 300" in restock
    problems = t.books_problems([check(sold=3, available=297)], book())
    assert any("INVARIANT VIOLATED" in p for p in problems)
    assert any("Redis sold 3, PostgreSQL purchases 2" in p for p in problems)
    problems = t.books_problems([check(live_holds=1, available=297)], book())
    assert any("1 holds still live" in p for p in problems)
    assert t.books_problems([], book()) == ["drop d1 (Drop 1) missing from PostgreSQL"]
    assert any("INVARIANT" in p for p in t.books_problems([check(total=None)], book()))


def test_verdict_exit_codes() -> None:
    clean = tally_of((t.RESERVE, Answer(201, None)))
    assert t.verdict(clean, []).exit_code == t.EXIT_OK
    assert t.verdict(clean, ["INVARIANT VIOLATED drop d1"]).exit_code == t.EXIT_INVARIANT
    assert t.verdict(tally_of((t.CANCEL, BROKEN)), []).exit_code == t.EXIT_FAILED
    assert t.verdict(tally_of((t.CANCEL, NO_ANSWER)), []).exit_code == t.EXIT_FAILED
    contradicted = tally_of()
    contradicted.anomaly("hold both purchased and cancelled")
    contradicted.anomaly(None)  # no problem: nothing recorded
    assert len(contradicted.anomalies) == 1
    assert t.verdict(contradicted, []).exit_code == t.EXIT_FAILED
    odd = tally_of((t.RESERVE, Answer(429, "RATE_LIMITED")))
    assert t.verdict(odd, []).exit_code == t.EXIT_OK  # reported only
    assert t.verdict(odd, [], strict=True).exit_code == t.EXIT_FAILED
    logged = ["the server logged 2 errors"]
    assert t.verdict(clean, [], warnings=logged).passed
    assert t.verdict(clean, [], strict=True, warnings=logged).exit_code == t.EXIT_FAILED
    both = t.verdict(tally_of((t.CANCEL, BROKEN)), ["drift"])
    assert both.exit_code == t.EXIT_INVARIANT
    assert both.reasons == ["drift", "1 answers with a 5xx status"]


def test_progress_line_and_routes() -> None:
    tally = tally_of((t.RESERVE, Answer(201, None)), (t.RESERVE, Answer(409, "SOLD_OUT")))
    tally.event("bought")
    line = t.progress_line(65.0, 60.0, tally.take_window(), {"product": 0.5})
    assert line.startswith("  1:05  2 req (0/s), p50 1.0 p99 1.0 ms; reserve: 201 1, SOLD_OUT 1")
    assert "holds: bought 1" in line
    assert line.endswith("5xx 0, no answer 0; cores product 0.50")
    [reserve] = t.route_lines(tally)
    assert "201 x1" in reserve
    assert "409 SOLD_OUT x1" in reserve


def test_metric_totals_pick_series_and_skip_created() -> None:
    text = "\n".join(
        [
            "# HELP sneakerdrop_reconciler_runs_total Reconciler passes",
            "sneakerdrop_reconciler_runs_total 7.0",
            "sneakerdrop_reconciler_runs_created 1.7e9",
            'sneakerdrop_holds_expired_total{layer="sweeper"} 3.0',
            'sneakerdrop_http_requests_total{route="/"} 9.0',
        ]
    )
    assert t.metric_totals(text, ["sneakerdrop_reconciler", "sneakerdrop_holds"]) == {
        "sneakerdrop_reconciler_runs_total": 7.0,
        'sneakerdrop_holds_expired_total{layer="sweeper"}': 3.0,
    }


def test_pacer_spaces_slots_and_never_catches_up() -> None:
    pacer = Pacer(rate=10)  # a slot every 0.1 s
    assert [round(pacer.claim(5.0), 3) for _ in range(3)] == [5.0, 5.1, 5.2]
    assert pacer.claim(9.0) == 9.0  # idle meanwhile: no burst of missed slots
    assert Pacer(rate=0).interval == 0  # unpaced
