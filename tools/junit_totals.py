"""Print one closing line with the totals of several junit XML reports."""

import sys
import xml.etree.ElementTree as ET


def main(paths: list[str]) -> int:
    tests = failures = skipped = 0
    for path in paths:
        root = ET.parse(path).getroot()
        for suite in root.iter('testsuite'):
            tests += int(suite.get('tests', 0))
            failures += int(suite.get('failures', 0))
            failures += int(suite.get('errors', 0))
            skipped += int(suite.get('skipped', 0))
    passed = tests - failures - skipped
    print(f'total: {passed} passed, {failures} failed, {skipped} skipped')
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
