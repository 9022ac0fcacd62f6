"""A restarted director carries on every flow: the table saved at stop and loaded at start
gives the same listing (less the time spent stopped), the same counters, and the next
packets of each connection are forwarded as before."""

import json

import pytest

from pyvs.config.yamlfile import parse
from pyvs.core import tablestate
from pyvs.views.listing import Fmt, list_all, list_conn
from pyvs.views.snapshot import snapshot
from tests.helpers import ACK, PSH, SYN, Flow

CONFIG = {"services": [
    {"address": "10.0.0.100:80", "scheduler": "rr", "realservers": [
        {"address": "192.168.10.1:80", "forward": "masq"},
        {"address": "192.168.10.2:80", "forward": "masq"}]},
    {"address": "10.0.0.100:0", "scheduler": "rr", "persistent": 360, "realservers": [
        {"address": "192.168.10.3:0", "forward": "route"}]}]}


def busy_director():
    d = parse(CONFIG, "c").build(0.0)
    flows = []
    for i, port in enumerate((80, 80, 23)):
        f = Flow(d, cport=40000 + i, vport=port)
        f.inb(SYN, 1.0 + i)
        if port == 80:
            f.out(SYN | ACK, 1.001 + i)
        f.inb(ACK, 1.002 + i)
        f.inb(PSH | ACK, 1.003 + i, b"hello")
        flows.append(f)
    d.handle_timers(10.0)
    return d, flows


def saved(d, now):
    """Through JSON, as the state file holds it."""
    return (json.loads(json.dumps(tablestate.header(d, now))),
            [json.loads(json.dumps(r)) for r in tablestate.rows(d, now)])


def test_restart_keeps_the_table_and_the_flows() -> None:
    old, flows = busy_director()
    head, rows = saved(old, 10.0)
    new = parse(CONFIG, "c").build(0.0)
    done = tablestate.restore(new, head, iter(rows), 0.5, elapsed=3.0)
    assert (done.entries, done.templates, done.expired, done.unconfigured) == (3, 1, 0, 0)
    # the same listing, 3 s older (the time spent stopped), counters included
    listing = list_conn(snapshot(old, 13.0))
    assert list_conn(snapshot(new, 0.5)) == listing
    old.handle_timers(12.0)
    new.handle_timers(2.0)        # an estimator tick on each side
    assert list_all(snapshot(new, 2.0), Fmt.NUMERIC | Fmt.STATS).splitlines()[3:] == \
        list_all(snapshot(old, 12.0), Fmt.NUMERIC | Fmt.STATS).splitlines()[3:]
    # each flow's next packet is forwarded as it was before the restart
    for f in flows:
        before = f.inb(PSH | ACK, 12.5, b"more")
        f.d = new
        after = f.inb(PSH | ACK, 2.5, b"more")
        f.d = old
        assert (after.reason, after.data, after.mark) == (before.reason, before.data,
                                                          before.mark)


def test_entries_that_would_have_expired_or_lost_their_realserver_are_left_out() -> None:
    old, _ = busy_director()
    head, rows = saved(old, 10.0)
    smaller = json.loads(json.dumps(CONFIG))
    del smaller["services"][0]["realservers"][1]         # rs2 is no longer configured
    new = parse(smaller, "c").build(0.0)
    done = tablestate.restore(new, head, iter(rows), 0.0, elapsed=0.0)
    assert (done.entries, done.unconfigured) == (2, 1)
    late = parse(CONFIG, "c").build(0.0)
    done = tablestate.restore(late, head, iter(rows), 0.0, elapsed=1000.0)
    assert (done.entries, done.expired) == (0, 3)


@pytest.mark.parametrize("head,rows,text", [
    ({"version": 9}, [], "not a pyvs table of version 1"),
    ({"version": 1}, [["C", 6]], "a malformed row"),
])
def test_a_bad_saved_table_says_why(head, rows, text) -> None:
    with pytest.raises(tablestate.TableStateError) as exc:
        tablestate.restore(parse(CONFIG, "c").build(0.0), head, iter(rows), 0.0, 0.0)
    assert str(exc.value).startswith(text)
