"""Module ids as a site operator copies them: `status` shows them whole, `forget` takes a prefix.

The real `site-node` commands (click, in process: no aggregator is contacted before
the confirmation, so none is needed) on a state directory holding module records.
"""

from __future__ import annotations

import json

from click.testing import CliRunner

from site_node.cli import cli
from site_node.state import ModuleRecord, StateDir

IDS = ("3c1f0b9a" + "1" * 24, "3c1f0b9a" + "2" * 24, "d00dfeed" + "3" * 24)


def site(tmp_path):
    cfg = tmp_path / "site.toml"
    cfg.write_text(
        '[site]\nfederation_id = "fedtest"\nsite_id = "st-a"\nstate_dir = "state"\n'
        '[aggregator]\nendpoint = "127.0.0.1:9"\n[data]\nsource = "digits"\n'
    )
    state = StateDir(tmp_path / "state").ensure()
    for n, module_id in enumerate(IDS):
        state.save_module(
            ModuleRecord(module_id, "trained", f"2026-12-0{n + 1}T00:00:00Z", [0, 1], 10, "f" * 64)
        )
    return cfg


def invoke(*args, input=None):
    return CliRunner().invoke(cli, [*map(str, args)], input=input, terminal_width=80)


def test_status_shows_every_module_id_whole_on_a_narrow_terminal(tmp_path):
    cfg = site(tmp_path)
    shown = invoke("status", "--config", cfg, "--offline")
    assert shown.exit_code == 0, shown.output
    for module_id in IDS:
        assert module_id in shown.output, shown.output
    listed = json.loads(invoke("status", "--config", cfg, "--offline", "--json").output)
    assert [m["module_id"] for m in listed["modules"]] == list(IDS)


def test_forget_takes_a_unique_prefix_and_names_the_candidates_of_an_ambiguous_one(tmp_path):
    cfg = site(tmp_path)
    asked = invoke("forget", "--config", cfg, "--module", "d00dfeed", "--reason", "x", input="n\n")
    assert asked.exit_code == 1  # declined: nothing sent
    assert f"delete module {IDS[2]} at the aggregator" in asked.output
    ambiguous = invoke("forget", "--config", cfg, "--module", "3c1f0b9a", "--reason", "x", "--yes")
    assert ambiguous.exit_code == 1
    assert "error[E_MODULE_ID_AMBIGUOUS]" in ambiguous.output
    assert IDS[0] in ambiguous.output and IDS[1] in ambiguous.output
    short = invoke("forget", "--config", cfg, "--module", "d00dfee", "--reason", "x", "--yes")
    assert short.exit_code == 1 and "error[E_MODULE_ID]" in short.output
    unknown = invoke("forget", "--config", cfg, "--module", "abcdef01", "--reason", "x", "--yes")
    assert unknown.exit_code == 1 and "error[E_NOT_FOUND]" in unknown.output
