"""The fold of SES events over a message item (core/domain/tracking.py): pure, no I/O."""

from core.domain.statuses import MessageStatus as M
from core.domain.statuses import contribution
from core.domain.tracking import DETAIL_CHARS, TrackedEvent, Tracking

READY = Tracking.of({"status": "READY_TO_SEND", "seen": set()})


def ev(kind, status, at, eid=None, **detail):
    return TrackedEvent(eid or f"{kind}-{at}", kind, status, at, "ses-1", detail)


SEND = ev("Send", M.SENT, "2026-01-01T10:00:00Z")
DELIVERY = ev("Delivery", M.DELIVERED, "2026-01-01T10:00:02Z", smtp_response="250 ok")
OPEN = ev("Open", M.OPENED, "2026-01-01T10:05:00Z", user_agent="Mozilla/5.0 …", ip="192.0.2.1")


def fold(state, *events):
    outcomes = []
    for e in events:
        state, o = state.apply(e)
        outcomes.append(o)
    return state, outcomes


def test_events_move_the_status_by_precedence_and_keep_the_first_of_each_kind():
    state, outcomes = fold(READY, SEND, DELIVERY, OPEN)
    assert outcomes == ["applied", "applied", "applied"]
    assert state.status == "OPENED" and state.seen == {"SENT", "DELIVERED", "OPENED"}
    assert [e["type"] for e in state.history] == ["Send", "Delivery", "Open"]
    assert state.stamps == {"ts_sent": SEND.at, "ts_delivered": DELIVERY.at, "ts_opened": OPEN.at}
    assert state.ses_message_id == "ses-1"


def test_a_replay_a_repeated_open_and_a_late_event_adding_nothing_change_nothing():
    state, _ = fold(READY, SEND, DELIVERY, OPEN)
    again, outcomes = fold(state, OPEN, ev("Open", M.OPENED, "2026-01-01T11:00:00Z"), DELIVERY, SEND)
    assert outcomes == ["duplicate"] * 4 and again == state  # nothing to write


def test_an_out_of_order_event_is_kept_without_moving_the_status():
    state, _ = fold(READY, OPEN)
    after, (outcome,) = fold(state, SEND)
    assert outcome == "kept" and after.status == "OPENED" and "SENT" in after.seen
    assert after.changed(state)["events"][-1]["type"] == "Send"


def test_counts_are_the_same_whatever_the_order_and_however_often():
    orders = [(SEND, DELIVERY, OPEN), (OPEN, SEND, DELIVERY), (DELIVERY, OPEN, OPEN, SEND, SEND)]
    finals = [fold(READY, *events)[0] for events in orders]
    assert len({(f.status, f.seen) for f in finals}) == 1
    total: dict[str, int] = {}
    state = READY
    for e in (OPEN, SEND, OPEN, DELIVERY):  # deltas of one write each add up to the final contribution
        after, _ = state.apply(e)
        for k, v in after.delta(state).items():
            total[k] = total.get(k, 0) + v
        state = after
    base = contribution(READY.status, set(READY.seen))
    assert {k: v for k, v in total.items() if v} == {
        k: v - base[k] for k, v in contribution(state.status, set(state.seen)).items() if v != base[k]}


def test_a_permanent_bounce_is_counted_once_and_kept_after_a_transient_one():
    soft = ev("Bounce", M.BOUNCED, "2026-01-01T10:01:00Z", bounce_type="Transient")
    hard = ev("Bounce", M.BOUNCED, "2026-01-01T10:02:00Z", bounce_type="Permanent")
    state, _ = fold(READY, SEND, soft)
    after, (outcome,) = fold(state, hard)
    assert outcome == "kept" and after.delta(state) == {"hard_bounced": 1}
    assert [e.get("bounce_type") for e in after.history if e["type"] == "Bounce"] == ["Transient", "Permanent"]
    replayed, _ = fold(after, hard)
    assert replayed == after


def test_the_history_holds_no_ip_or_user_agent_and_cuts_long_details():
    click = ev("Click", M.CLICKED, "2026-01-01T10:06:00Z", link="https://x/" + "a" * 1000, user_agent="UA",
               ip="192.0.2.1")
    state, _ = fold(READY, OPEN, click)
    assert all("ip" not in e and "user_agent" not in e for e in state.history)
    assert len(state.history[-1]["link"]) == DETAIL_CHARS


def test_a_write_names_only_what_changed_and_the_next_generation():
    state, _ = fold(READY, SEND)
    after, _ = fold(state, DELIVERY)
    sets = after.changed(state)
    assert sets["ev_gen"] == state.gen + 1 and sets["status"] == "DELIVERED" and "ses_message_id" not in sets
    assert set(sets) == {"ev_gen", "status", "seen", "events", "ts_delivered"}
