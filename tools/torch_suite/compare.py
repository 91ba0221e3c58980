"""The tests torch.optim passes and optimlib does not, from two JUnit XML files.

python compare.py torch.xml optimlib.xml
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ElementTree


def outcomes(path: str) -> dict[str, tuple[str, str]]:
    """Each test's outcome (passed, failed, skipped) and the first line of its message."""
    results = {}
    for case in ElementTree.parse(path).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = "skipped" if child.tag == "skipped" else "failed"
                message = (child.get("message") or child.text or "").strip().split("\n")[0]
                break
        # The class without its module path, which depends on where pytest ran.
        test_class = (case.get("classname") or "").rsplit(".", 1)[-1]
        results[f"{test_class}::{case.get('name')}"] = (outcome, message[:200])
    return results


def main(torch_xml: str, optimlib_xml: str) -> None:
    theirs, ours = outcomes(torch_xml), outcomes(optimlib_xml)
    for name, results in (("torch.optim", theirs), ("optimlib", ours)):
        kinds = ("passed", "failed", "skipped")
        counts = {kind: sum(r[0] == kind for r in results.values()) for kind in kinds}
        print(f"{name:12} {counts} of {len(results)}")
    passed = [test for test, (outcome, _) in theirs.items() if outcome == "passed"]
    missed = [test for test in passed if ours.get(test, ("missing", ""))[0] != "passed"]
    print(f"optimlib passes {len(passed) - len(missed)} of the {len(passed)} tests torch passes")
    for test in sorted(missed):
        print(f"  {test}: {ours.get(test, ('missing', ''))}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
