"""TEMPORARY: replaced by the git edge work (one redaction for every URL form)."""

import re

_USERINFO = re.compile(r"(?<=://)[^/@]+@")


def redact(text: str) -> str:
    return _USERINFO.sub("***@", text)
