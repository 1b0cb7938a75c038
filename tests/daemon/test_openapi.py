"""The OpenAPI spec of the running daemon, fuzzed with Schemathesis: no 5xx anywhere."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.daemon.conftest import TOKEN

ST = str(Path(sys.executable).parent / "st")


def test_schemathesis_finds_no_server_errors(converged, tmp_path):
    daemon = converged
    for token in (TOKEN, "wrong-token"):
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
            ],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
        counts = re.search(r"(\d+) generated, (\d+) passed", result.stdout)
        assert counts and counts[1] == counts[2] and int(counts[1]) > 100, result.stdout[-3000:]
        assert "Tested: 12" in result.stdout
    assert daemon.get("/readyz").status_code == 200
    assert daemon.served()["web-01"] == "1.0.0"
