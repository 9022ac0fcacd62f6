"""pyvs against a real kernel: every record in tests/kernel/records/ (Debian 12's Linux 6.1
IPVS under qemu, recorded by scripts/kernel-check.sh) replayed through `pyvs replay` and
compared view by view.  A difference fails unless docs/kernel-check.md lists it as known,
with its reason; a listed difference that no longer occurs fails too, so the list stays
true.  No qemu here: the records are committed."""

import json
import shutil
from pathlib import Path

import pytest

from pyvs.lab import kernel_check as kc

RECORDS = sorted(d for d in kc.RECORDS.glob("*") if (d / "record.json").exists())
KNOWN = kc.known_differences()


def _failures(report: kc.Report) -> list[str]:
    return [f"{r.observation} {r.view}: {r.note}" for r in report.results
            if not r.ok and (report.scenario, kc.COLUMNS[r.view]) not in KNOWN]


@pytest.mark.parametrize("recdir", RECORDS, ids=[d.name for d in RECORDS])
def test_pyvs_shows_what_the_kernel_showed(recdir: Path) -> None:
    report = kc.compare_record(recdir)
    assert not report.error
    assert report.results, "the record has no observation of the director"
    assert not _failures(report), "\n".join(_failures(report))


def test_every_known_difference_still_differs() -> None:
    """docs/kernel-check.md's table of known differences stays true (it may be empty)."""
    for scenario, column in sorted(KNOWN):
        recdir = kc.RECORDS / scenario
        assert (recdir / "record.json").exists(), f"docs/kernel-check.md names no record {scenario}"
        report = kc.compare_record(recdir)
        views = [v for v, c in kc.COLUMNS.items() if c == column]
        assert any(not r.ok for r in report.results if r.view in views), (
            f"{scenario} {column} now matches: drop it from the known differences")


def test_a_changed_kernel_listing_is_a_difference(tmp_path: Path) -> None:
    """The check can fail: one ActiveConn in a recorded -L -n made wrong is reported."""
    src = kc.RECORDS / "nat-client-close"
    dst = tmp_path / "nat-client-close"
    shutil.copytree(src, dst)
    rec = json.loads((dst / "record.json").read_text())
    obs = next(d for d in rec["timeline"] if d["event"].get("observe") == "established")
    cmd = next(c for c in obs["result"]["commands"] if c["view"] == "-L -n")
    assert "Masq    1      1          0" in cmd["out"]
    cmd["out"] = cmd["out"].replace("Masq    1      1          0", "Masq    1      2          0", 1)
    (dst / "record.json").write_text(json.dumps(rec))
    bad = [r for r in kc.compare_record(dst).results if not r.ok]
    assert [(r.view, r.observation) for r in bad] == [("-L -n", "established")]
    assert "kernel 'TCP" not in bad[0].note and "1      2" in bad[0].note


HEAD = ("IPVS connection entries\n"
        "pro expire state       source             virtual            destination\n")
ROW = "TCP {}  {:<11} 198.51.100.2:{:<5}  198.51.100.100:80  192.0.2.11:80\n"


def test_connection_rows_compare_as_a_set_with_expiry_slack() -> None:
    tw, es = ("TIME_WAIT", 40000), ("ESTABLISHED", 40001)
    ours = HEAD + ROW.format("01:59", *tw) + ROW.format("14:58", *es)
    kernel = HEAD + ROW.format("14:57", *es) + ROW.format("02:00", *tw)      # hash order
    assert kc.compare_conns(kernel, ours, ours, proc=False) == (True, "")
    late = kernel.replace("14:57", "14:55")
    ok, note = kc.compare_conns(late, ours, ours, proc=False)
    assert not ok and "kernel expires in 895 s, pyvs 898..898 s" in note


def test_a_kernel_row_at_zero_that_pyvs_expired_is_a_late_timer() -> None:
    ours = HEAD + ROW.format("01:59", "TIME_WAIT", 40000)
    kernel = ours + ROW.format("00:00", "CLOSE", 40002)
    assert kc.compare_conns(kernel, ours, ours, proc=False) == (
        True, "1 entries overdue in the kernel (timer wheel)")
    ok, note = kc.compare_conns(ours + ROW.format("00:03", "CLOSE", 40002), ours, ours, False)
    assert not ok and note.startswith("kernel has 'TCP CLOSE 198.51.100.2:40002")


def test_a_scenario_error_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("topology: {mode: nat}\ntimeline:\n  - {t: 1, connect: a, close: a}\n")
    with pytest.raises(kc.ScenarioError) as exc:
        kc.load_scenario(bad)
    assert str(exc.value) == (f"{bad}: timeline[0]: needs exactly one of close, connect, exec, "
                              "ipvsadm, observe, rst, send, sysctl, udp")
    bad.write_text("topology: {mode: lvs}\n")
    with pytest.raises(kc.ScenarioError, match=r"topology.mode: 'lvs' is not one of"):
        kc.load_scenario(bad)


def test_every_committed_scenario_loads_and_has_a_record() -> None:
    names = [p.stem for p in kc.scenario_paths([])]
    for p in kc.scenario_paths([]):
        kc.load_scenario(p)
    assert names and [d.name for d in RECORDS] == names
