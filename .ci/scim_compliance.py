"""Runs the scim2-tester compliance checks against a running Muster SCIM endpoint.

Usage: python .ci/scim_compliance.py BASE_URL TOKEN [-v]
Prints every failed check (every check with -v) and exits non-zero when a check
fails that is not a known, documented deviation (see docs/scim.md).
"""

import sys

from httpx2 import Client
from scim2_client.engines.httpx2 import SyncSCIMClient
from scim2_tester import Status, check_server

# (check, words in its reason) -> why we answer differently. Keep docs/scim.md in step.
KNOWN_DEVIATIONS: dict[tuple[str, str], str] = {}


def known(title: str, reason: str) -> str | None:
    for (check, words), why in KNOWN_DEVIATIONS.items():
        if title == check and words in reason:
            return why
    return None


def main() -> int:
    base_url, token = sys.argv[1], sys.argv[2]
    verbose = "-v" in sys.argv
    http = Client(base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    client = SyncSCIMClient(http)
    client.discover()
    results = check_server(client)
    passed = failed = deviations = 0
    for result in results:
        title = (result.title or "").split(":")[0].strip()
        reason = result.reason or ""
        if result.status == Status.ERROR:
            why = known(title, reason)
            if why:
                deviations += 1
                print(f"KNOWN    {title}: {reason} ({why})")
            else:
                failed += 1
                print(f"FAILED   {title}: {reason}")
        else:
            passed += 1
            if verbose:
                print(f"{result.status.name:8} {title}")
    print(f"scim compliance: {passed} passed, {failed} failed, {deviations} known deviations")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
