"""The README's examples work as written: its scenario YAML loads and runs, and the
commands of its tour exist with the flags it shows."""

import re
from pathlib import Path

from pyvs.cli import main

README = Path(__file__).resolve().parent.parent / "README.md"


def test_the_scenario_example_runs(tmp_path, capsys):
    (block,) = re.findall(r"```yaml\n(.*?)```", README.read_text(), re.S)
    path = tmp_path / "my-test.yaml"
    path.write_text(block)
    assert main(["simulate", str(path), "--mode", "dr", "--at", "100"]) == 0
    out = capsys.readouterr().out
    # the drain at 60 s took effect: rs2 weight 0 on port 80
    assert re.search(r"-> 192\.0\.2\.12:80 +Route +0 ", out), out


def test_the_tour_s_offline_commands_parse(capsys):
    for argv in (["scenarios"], ["compare", "--help"], ["replay", "--help"],
                 ["lab", "up", "--help"], ["check-config", "--help"]):
        try:
            main(argv)
        except SystemExit as exc:       # --help exits 0
            assert exc.code == 0, argv
    text = capsys.readouterr().out
    for flag in ("--sync-master", "--sync-backup", "--directors", "--queues", "--capture"):
        assert flag in text, flag
