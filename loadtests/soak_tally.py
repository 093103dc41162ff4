"""What a soak counts and how it is judged: answers per route, anomalies, the books, a verdict.

Pure code over what the shoppers saw and what the stores say at the end, so it can be
checked without a server (loadtests/tests/test_soak_tally.py).

- Every answer is counted by (route, status, problem code); a connection error or
  timeout is status 0 with the exception's name as its code.
- Each route has the answers the contract allows it in a soak (rate limits off, no
  store faults); anything else is "unexpected" and reported.
- An anomaly is an answer that contradicts an earlier one: a repeated purchase that
  names another purchase, an idempotent replay that differs from the first answer, a
  purchase and a cancel of one hold that both succeeded, a purchase past `expiresAt`
  that succeeded.
- The books: at the end, with traffic stopped and every hold gone, each drop's
  PostgreSQL total must be its stock plus the restocks the admin was told about, its
  purchases exactly the ones shoppers were told about, Redis's sold count the same,
  and `available + live holds + purchases == total` (the app's own check).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from app.services.invariant import DropCheck
from loadtests.invariant import check_problem
from loadtests.stats import Latency

# Routes, as the soak names them (one name per kind of call, not per URL).
LIST = "GET /api/drops"
DROP = "GET /api/drops/{id}"
RESERVE = "POST reserve"
RESERVE_REPLAY = "POST reserve (Idempotency-Key replay)"
PURCHASE = "POST purchase"
PURCHASE_REPEAT = "POST purchase (repeat)"
PURCHASE_REPLAY = "POST purchase (Idempotency-Key replay)"
PURCHASE_LATE = "POST purchase (after expiresAt)"
PURCHASE_RACE = "POST purchase (racing a cancel)"
PURCHASE_PAIR = "POST purchase (twice at once)"
CANCEL = "DELETE reservation"
CANCEL_RACE = "DELETE reservation (racing a purchase)"
CANCEL_BOUGHT = "DELETE reservation (purchased)"
MY_HOLDS = "GET /api/me/reservations"
MY_PURCHASES = "GET /api/me/purchases"
RESTOCK = "POST restock"
CANCEL_DROP = "PATCH drop (cancel)"

OK = None  # the code of a success
_RESERVE = frozenset(
    {
        (201, OK),
        (409, "SOLD_OUT"),
        (409, "LIMIT_REACHED"),
        (409, "DROP_NOT_LIVE"),
        (409, "COOLDOWN"),  # a shopper who cancelled or let a hold expire, asking again
    }
)
_PURCHASE_FAILED = frozenset({(410, "RESERVATION_EXPIRED"), (409, "RESERVATION_CANCELLED")})

EXPECTED: Mapping[str, frozenset[tuple[int, str | None]]] = {
    LIST: frozenset({(200, OK)}),
    DROP: frozenset({(200, OK)}),
    RESERVE: _RESERVE,
    RESERVE_REPLAY: _RESERVE,
    # A hold bought before its deadline is bought; 410 only when the shopper was slower
    # than the hold time, 409 when the admin cancelled the drop meanwhile.
    PURCHASE: frozenset({(201, OK)}) | _PURCHASE_FAILED,
    PURCHASE_REPEAT: frozenset({(200, OK)}) | _PURCHASE_FAILED,
    PURCHASE_REPLAY: frozenset({(201, OK)}) | _PURCHASE_FAILED,
    PURCHASE_LATE: _PURCHASE_FAILED,
    PURCHASE_RACE: frozenset({(201, OK)}) | _PURCHASE_FAILED,
    PURCHASE_PAIR: frozenset({(201, OK), (200, OK)}) | _PURCHASE_FAILED,
    CANCEL: frozenset({(204, OK)}),  # only holds nobody bought are cancelled
    CANCEL_RACE: frozenset({(204, OK), (409, "RESERVATION_PURCHASED")}),
    CANCEL_BOUGHT: frozenset({(409, "RESERVATION_PURCHASED")}),
    MY_HOLDS: frozenset({(200, OK)}),
    MY_PURCHASES: frozenset({(200, OK)}),
    RESTOCK: frozenset({(200, OK), (409, "INVALID_STATE")}),
    CANCEL_DROP: frozenset({(200, OK)}),
}

Outcome = tuple[str, int, str | None]  # (route, status, code)

EXIT_OK = 0
EXIT_BROKEN = 1  # the run itself failed (set by soak.py)
EXIT_FAILED = 2  # 5xx, connection errors, anomalies (unexpected answers with --strict)
EXIT_INVARIANT = 3  # the books do not balance


@dataclass(frozen=True)
class Answer:
    status: int  # 0: no answer (connection error or timeout)
    code: str | None  # the problem's code, or the exception's name when status is 0
    body: Any = None  # the parsed JSON body, when there was one

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def field(self, name: str) -> Any:
        return self.body.get(name) if isinstance(self.body, dict) else None


@dataclass
class Window:
    """What happened since the last progress line."""

    requests: int = 0
    server_errors: int = 0
    connection_errors: int = 0
    latencies_ns: list[int] = field(default_factory=list)
    reserves: Counter[str] = field(default_factory=Counter)  # "201", "SOLD_OUT", ...
    events: Counter[str] = field(default_factory=Counter)


@dataclass
class Tally:
    outcomes: Counter[Outcome] = field(default_factory=Counter)
    latencies_ns: dict[str, list[int]] = field(default_factory=dict)
    events: Counter[str] = field(default_factory=Counter)
    anomalies: list[str] = field(default_factory=list)
    error_samples: list[str] = field(default_factory=list)  # bodies of the first 5xx
    window: Window = field(default_factory=Window)

    def record(self, route: str, answer: Answer, latency_ns: int, raw: bytes = b"") -> None:
        self.outcomes[(route, answer.status, answer.code)] += 1
        self.latencies_ns.setdefault(route, []).append(latency_ns)
        w = self.window
        w.requests += 1
        w.latencies_ns.append(latency_ns)
        if answer.status == 0:
            w.connection_errors += 1
        elif answer.status >= 500:
            w.server_errors += 1
        if answer.status >= 500 or answer.status == 0:
            if len(self.error_samples) < 20:
                text = raw[:400].decode(errors="replace")
                self.error_samples.append(f"{route} -> {answer.status} {answer.code}: {text}")
        if route in (RESERVE, RESERVE_REPLAY):
            w.reserves[str(answer.status) if answer.ok else str(answer.code)] += 1

    def event(self, name: str, n: int = 1) -> None:
        self.events[name] += n
        self.window.events[name] += n

    def anomaly(self, text: str | None) -> None:
        if text is not None:
            self.anomalies.append(text)

    def take_window(self) -> Window:
        window, self.window = self.window, Window()
        return window


# --- consistency of answers to one hold ---------------------------------------------------


def repeat_problem(first: Answer, again: Answer) -> str | None:
    """A purchase repeated for the same hold: the same purchase (200) or the same refusal."""
    if first.status == 0 or again.status == 0 or again.status >= 500:
        return None  # counted as errors already; nothing to compare
    if first.ok:
        if again.status != 200:
            return f"purchase repeated after {first.status}: {again.status} {again.code}"
        if again.field("id") != first.field("id"):
            return f"purchase repeated: purchase {again.field('id')}, first {first.field('id')}"
        return None
    if again.ok:
        return f"purchase refused ({first.status} {first.code}), then {again.status} on a repeat"
    return None


def pair_problem(one: Answer, other: Answer) -> str | None:
    """Two purchases of one hold at once: one purchase, created once (201 then 200)."""
    answers = [a for a in (one, other) if a.status != 0 and a.status < 500]
    bought = [a for a in answers if a.ok]
    if len({a.field("id") for a in bought}) > 1:
        return f"two purchases of one hold: {bought[0].field('id')}, {bought[1].field('id')}"
    if sum(a.status == 201 for a in bought) > 1:
        return "two purchases of one hold at once both answered 201"
    if len(bought) == 2 and not any(a.status == 201 for a in bought):
        return "two purchases of one hold at once both answered 200: none created it"
    return None


def replay_problem(first: Answer, replay: Answer) -> str | None:
    """An Idempotency-Key replay returns the first response again: status and body."""
    if first.status == 0 or replay.status == 0 or first.status >= 500:
        return None  # a 5xx is not remembered; no answer to compare with
    if (replay.status, replay.body) != (first.status, first.body):
        return (
            f"Idempotency-Key replay differs: first {first.status} {first.body!r}, "
            f"replay {replay.status} {replay.body!r}"
        )
    return None


def race_problem(purchase: Answer, cancel: Answer) -> str | None:
    """A purchase and a cancel of one hold at once: at most one of them wins."""
    if purchase.ok and cancel.status == 204:
        return f"hold both purchased ({purchase.status}) and cancelled (204)"
    if purchase.code == "RESERVATION_CANCELLED" and cancel.code == "RESERVATION_PURCHASED":
        return "purchase saw the hold cancelled and the cancel saw it purchased"
    return None


def late_problem(late: Answer, seconds_past: float) -> str | None:
    """A purchase sent after the hold's expiresAt must not succeed."""
    if late.ok:
        return f"purchase {seconds_past:.2f} s after expiresAt answered {late.status}"
    return None


# --- the books ---------------------------------------------------------------------------


@dataclass
class DropBook:
    """One drop as the load generator knows it: what it was told, not what it sent."""

    drop_id: str
    name: str
    initial: int
    restocked: int = 0  # units of acknowledged restocks
    restock_unknown: int = 0  # units of restocks with no answer (may or may not have happened)
    purchases: set[str] = field(default_factory=set)  # ids of acknowledged purchases
    purchase_unknown: int = 0  # purchases with no answer
    cancelled: bool = False


def books_problems(checks: Iterable[DropCheck], books: Mapping[str, DropBook]) -> list[str]:
    """What does not balance at the end, for the drops in `books` (quiet stores assumed)."""
    found = {c.drop_id: c for c in checks}
    problems = []
    for drop_id, book in books.items():
        c = found.get(drop_id)
        if c is None:
            problems.append(f"drop {drop_id} ({book.name}) missing from PostgreSQL")
            continue
        if (invariant := check_problem(c)) is not None:
            problems.append(invariant)
        if c.live_holds:
            problems.append(f"drop {drop_id}: {c.live_holds} holds still live after the wait")
        low, high = book.initial + book.restocked, book.initial + book.restocked
        high += book.restock_unknown
        if not low <= c.total_pg <= high:
            problems.append(
                f"drop {drop_id}: total {c.total_pg} in PostgreSQL, expected {low}"
                + (f"..{high}" if high != low else "")
                + " (stock plus acknowledged restocks)"
            )
        acked = len(book.purchases)
        if c.sold_pg < acked:
            problems.append(
                f"drop {drop_id}: {acked} purchases acknowledged, "
                f"PostgreSQL has {c.sold_pg} (acknowledged purchases lost)"
            )
        elif c.sold_pg > acked + book.purchase_unknown:
            problems.append(
                f"drop {drop_id}: PostgreSQL has {c.sold_pg} purchases, "
                f"{acked} acknowledged and {book.purchase_unknown} unanswered"
            )
        if c.total is not None and c.sold != c.sold_pg:
            problems.append(
                f"drop {drop_id}: Redis sold {c.sold}, PostgreSQL purchases {c.sold_pg}"
            )
    return problems


# --- the verdict -------------------------------------------------------------------------


def server_errors(outcomes: Mapping[Outcome, int]) -> int:
    return sum(n for (_, status, _), n in outcomes.items() if status >= 500)


def connection_errors(outcomes: Mapping[Outcome, int]) -> int:
    return sum(n for (_, status, _), n in outcomes.items() if status == 0)


def unexpected(outcomes: Mapping[Outcome, int]) -> list[tuple[Outcome, int]]:
    """Answers outside their route's allowed set (5xx and connection errors counted apart)."""
    return sorted(
        ((key, n) for key, n in outcomes.items() if _unexpected(key)),
        key=lambda item: (item[0][0], item[0][1], item[0][2] or ""),
    )


def _unexpected(key: Outcome) -> bool:
    route, status, code = key
    if status == 0 or status >= 500:
        return False
    return (status, code) not in EXPECTED.get(route, frozenset())


@dataclass(frozen=True)
class Verdict:
    exit_code: int
    reasons: list[str]

    @property
    def passed(self) -> bool:
        return self.exit_code == EXIT_OK


def verdict(
    tally: Tally, invariant: Sequence[str], *, strict: bool = False, warnings: Sequence[str] = ()
) -> Verdict:
    """Exit 3 when the books do not balance, else 2 on 5xx, no answer or an anomaly; with
    `strict`, unexpected answers and `warnings` (errors the server logged) fail too."""
    reasons = list(invariant)
    code = EXIT_INVARIANT if invariant else EXIT_OK
    failed = []
    if n := server_errors(tally.outcomes):
        failed.append(f"{n} answers with a 5xx status")
    if n := connection_errors(tally.outcomes):
        failed.append(f"{n} requests without an answer (connection error or timeout)")
    if tally.anomalies:
        failed.append(f"{len(tally.anomalies)} answers contradicting an earlier one")
    odd = unexpected(tally.outcomes)
    if odd and strict:
        failed.append(f"{sum(n for _, n in odd)} unexpected answers (--strict)")
    if strict:
        failed += [f"{w} (--strict)" for w in warnings]
    if failed and code == EXIT_OK:
        code = EXIT_FAILED
    return Verdict(code, reasons + failed)


# --- printing ----------------------------------------------------------------------------


def outcome_text(key: Outcome) -> str:
    _, status, code = key
    return f"{status} {code}" if code else str(status)


def route_lines(tally: Tally) -> list[str]:
    """One line per route: answers by status and code, and the latency."""
    by_route: dict[str, list[tuple[Outcome, int]]] = {}
    for key, n in tally.outcomes.items():
        by_route.setdefault(key[0], []).append((key, n))
    lines = []
    for route in sorted(by_route):
        parts = sorted(by_route[route], key=lambda item: -item[1])
        counts = ", ".join(f"{outcome_text(key)} x{n}" for key, n in parts)
        latency = Latency.of(tally.latencies_ns.get(route, []))
        timing = f"; p50 {latency.p50:.1f} p99 {latency.p99:.1f} ms" if latency else ""
        lines.append(f"  {route}: {counts}{timing}")
    return lines


def progress_line(elapsed_s: float, seconds: float, w: Window, cores: Mapping[str, float]) -> str:
    latency = Latency.of(w.latencies_ns)
    timing = f"p50 {latency.p50:.1f} p99 {latency.p99:.1f} ms" if latency else "no answers"
    reserves = ", ".join(f"{k} {n}" for k, n in w.reserves.most_common())
    holds = ", ".join(
        f"{name} {w.events[name]}"
        for name in ("bought", "cancelled", "abandoned", "late", "raced")
        if w.events[name]
    )
    line = (
        f"{int(elapsed_s) // 60:>3}:{int(elapsed_s) % 60:02d}  {w.requests} req "
        f"({w.requests / seconds:.0f}/s), {timing}; reserve: {reserves or '-'}; "
        f"holds: {holds or '-'}; 5xx {w.server_errors}, no answer {w.connection_errors}"
    )
    if cores:
        line += "; cores " + ", ".join(f"{k} {v:.2f}" for k, v in cores.items())
    return line


# --- /metrics ----------------------------------------------------------------------------


def metric_totals(text: str, prefixes: Sequence[str]) -> dict[str, float]:
    """The samples of Prometheus text whose name starts with one of `prefixes`.

    Series are keyed by `name{labels}` as printed; `_created` samples are skipped.
    """
    totals: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        name = series.split("{", 1)[0]
        if name.endswith("_created") or not name.startswith(tuple(prefixes)):
            continue
        try:
            totals[series] = totals.get(series, 0.0) + float(value)
        except ValueError:
            continue
    return totals
