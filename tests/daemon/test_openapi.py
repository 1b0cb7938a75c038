"""The OpenAPI spec of the running daemon, fuzzed with Schemathesis: no 5xx anywhere.

The verdict is read from Schemathesis' JUnit report (one test case per API operation, with a
``failure`` or ``error`` element when a check failed), not from its terminal output, whose
wording changes between releases. The version used is the one requirements.lock pins.
"""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from tests.daemon.conftest import TOKEN

ST = str(Path(sys.executable).parent / "st")
METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


def operations(spec: dict) -> set[str]:
    """Every operation of an OpenAPI document, labelled as Schemathesis does: `GET /path`."""
    return {
        f"{method.upper()} {path}"
        for path, item in spec["paths"].items()
        for method in item
        if method in METHODS
    }


def junit_cases(report: Path) -> dict[str, set[str]]:
    """Test case name -> the outcome elements it carries (failure, error, skipped)."""
    root = ET.parse(report).getroot()
    return {case.get("name", ""): {child.tag for child in case} for case in root.iter("testcase")}


def test_schemathesis_finds_no_server_errors(converged, tmp_path):
    daemon = converged
    expected = operations(daemon.get("/openapi.json").json())
    assert len(expected) >= 10, expected
    for label, token in (("token", TOKEN), ("wrong-token", "wrong-token")):
        report = tmp_path / f"junit-{label}.xml"
        result = subprocess.run(
            [
                ST,
                "run",
                f"{daemon.url}/openapi.json",
                "--checks",
                "not_a_server_error,response_schema_conformance",
                "--max-examples",
                "25",
                "--header",
                f"Authorization: Bearer {token}",
                "--request-timeout",
                "120",
                "--seed",
                "1",
                "--report",
                "junit",
                "--report-junit-path",
                str(report),
            ],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=tmp_path,
        )
        output = result.stdout[-6000:] + result.stderr[-2000:]
        assert result.returncode == 0, output
        cases = junit_cases(report)
        # every operation of the spec was exercised, and none failed, errored or was skipped
        assert expected <= set(cases), f"not exercised: {sorted(expected - set(cases))}\n{output}"
        bad = {name: tags for name, tags in cases.items() if tags & {"failure", "error"}}
        assert not bad, f"{bad}\n{output}"
        skipped = {name for name in expected if "skipped" in cases[name]}
        assert not skipped, f"skipped: {sorted(skipped)}\n{output}"
    assert daemon.get("/readyz").status_code == 200
    assert daemon.served()["web-01"] == "1.0.0"
