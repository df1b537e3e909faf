"""The stress harness, run as the real CLI on its lightest configuration."""

from __future__ import annotations

import json

from helpers import ONEWRITER_CLI, run


def test_stress_light_configuration_has_no_duplicates_and_no_losses() -> None:
    result = run([ONEWRITER_CLI, "jobs", "stress", "--configs", "light", "--json"], timeout=120)
    [line] = [ln for ln in result.stdout.splitlines() if ln.startswith("RESULTS ")]
    [light] = json.loads(line[len("RESULTS ") :])
    assert (light["config"], light["workers"], light["jobs"]) == ("light", 5, 50)
    assert light["success_pct"] == 100.0
    assert light["duplicates"] == 0 and light["lost"] == 0 and light["errors"] == 0
    assert light["throughput"] > 0 and light["p99_ms"] > 0
    assert "published" in result.stdout and "light: 50/50 jobs done" in result.stderr
