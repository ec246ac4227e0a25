"""The Grafana dashboard in docs/: valid JSON Grafana imports, and every series it queries is
one metricsd serves, checked against a real scrape of the e2e stack (tests/unit/data/
metrics-scrape.txt, recorded from its endpoint) and against metricsd's own filter."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from tests.unit.test_metrics import metricsd

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "docs" / "grafana-dashboard.json"
SCRAPE = ROOT / "tests" / "unit" / "data" / "metrics-scrape.txt"
# Every series metricsd serves starts with one of these (a label value never does).
SERIES = re.compile(r"\b(?:dovecot|rspamd|postfix|redis|pg|mailstack)_[a-zA-Z0-9_:]*")
SOURCES = ("postfix", "redis", "postgres", "dovecot", "rspamd", "postfix_log")


def _targets(dashboard: dict[str, Any]) -> list[str]:
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


def _served() -> set[str]:
    """Each sample name of the recorded scrape (a histogram's _count, _sum, _bucket too)."""
    return {
        metricsd.sample_name(line)
        for line in SCRAPE.read_text().splitlines()
        if line and not line.startswith("#")
    }


def test_the_dashboard_is_json_grafana_imports() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["title"] and dashboard["uid"]
    assert dashboard["panels"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"])
        if panel["type"] != "row":
            assert panel["targets"], panel["title"]
            assert panel["datasource"]["uid"] == "${datasource}"


def test_every_series_the_dashboard_queries_is_in_a_real_scrape() -> None:
    served = _served()
    for expr in _targets(json.loads(DASHBOARD.read_text())):
        names = SERIES.findall(expr)
        assert names, expr  # each query reads at least one of the stack's series
        for name in names:
            assert name in served, f"{name} (in {expr}) is not in the recorded scrape"


def test_the_recorded_scrape_is_what_metricsd_serves() -> None:
    # The fixture is metricsd's own output with every source up: each family passes its
    # source's filter, and re-serving it changes nothing.
    text = SCRAPE.read_text()
    for source in SOURCES:
        assert f'mailstack_metrics_source_up{{source="{source}"}} 1' in text, source
    families = [family.name for family in metricsd.parse_families(text)]
    for name in families:
        if name != "mailstack_metrics_source_up":
            assert any(keep(name) for keep in metricsd.KEEP.values()), name
    assert set(metricsd.REDIS_FAMILIES) <= set(families)
    assert set(metricsd.POSTGRES_FAMILIES) <= set(families)
