"""The sync knobs as the master reads them (ip_vs_sync.c start_sync_thread(),
sb_queue_tail())."""

from pyvs.config import load
from pyvs.core.engine import Director
from pyvs.core.sync import SyncMaster
from tests.helpers import ACK, PSH, SYN, Flow, make_director


def test_sync_ports_past_64_start_64_threads() -> None:
    d = Director()
    d.set_sysctl("sync_ports", 128)
    assert len(SyncMaster(d).builders) == 64          # IPVS_SYNC_PORTS_MAX


def test_config_file_takes_sync_qlen_max_as_an_unsigned_long(tmp_path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(f"sysctls: {{sync_qlen_max: {2**40}}}\n")
    assert load(str(good)).sysctls.sync_qlen_max == 2**40
    assert Director().sysctls.sync_qlen_max == (2**31 - 1) // 32   # free pages / 32


def _sync_flows(d, n, at, first=30000):
    for i in range(n):
        f = Flow(d, cport=first + i)
        for j, flags in enumerate((SYN, ACK, PSH | ACK)):
            f.inb(flags, at + 0.001 * j)


def test_sync_qlen_max_zero_queues_nothing() -> None:
    """sb_queue_tail() queues a full buffer while sync_queue_len < sync_qlen_max: with 0
    every full buffer is released unsent (only the current one goes, by the 2 s flush of
    next_sync_buff()); the bound is read at each buffer, not when the daemon starts."""
    d = make_director()
    m = SyncMaster(d, start=0.0)
    d.set_sysctl("sync_qlen_max", 0)
    _sync_flows(d, 100, 0.0)
    records = sum((len(data) - 8) // 36 for _, data in m.due(10.0))
    dropped = m.builders[0].dropped
    assert dropped >= 1 and records + dropped * 40 == 100     # 40 records fill a buffer
    d.set_sysctl("sync_qlen_max", 2)                       # two full buffers, then the rest
    _sync_flows(d, 100, 20.0, 31000)
    assert sum((len(data) - 8) // 36 for _, data in m.due(30.0)) == 100
