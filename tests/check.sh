#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# The whole check: dependencies, an ASan+UBSan build, every meson test suite
# (unit, fuzz replay, integration), then ONE final line
#   N passed, N failed[, N skipped]
# counting single test cases: the unit programs' TAP subtests (from meson's
# JUnit log, without the integration entry) plus the pytest cases (from
# pytest-junit.xml). Exits non-zero if anything failed.
#   BUILD_DIR  build directory (default build-check)
set -uo pipefail
cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." || exit 2

BUILD=${BUILD_DIR:-build-check}
PY=/usr/bin/python3

summary_fail() {	# the one final line when we never got to the tests
	echo "check.sh: $1" >&2
	echo "0 passed, 1 failed"
	exit 1
}

bash tests/deps.sh || summary_fail "installing dependencies failed"

opts=('-Db_sanitize=address,undefined' -Db_lundef=false)
if [[ -f $BUILD/meson-private/coredata.dat ]]; then
	meson setup --reconfigure "$BUILD" "${opts[@]}" >/dev/null ||
		summary_fail "meson setup --reconfigure $BUILD failed"
else
	meson setup "$BUILD" "${opts[@]}" >/dev/null ||
		summary_fail "meson setup $BUILD failed"
fi
ninja -C "$BUILD" || summary_fail "build failed"

# Mounts left by an earlier run that was killed would break pytest's
# clean-up of its temporary directory.
"$PY" - "$PWD/$BUILD/pytest-tmp" <<'PYEOF'
import re, subprocess, sys
root = sys.argv[1] + '/'
for line in open('/proc/self/mountinfo', 'rb'):
    mp = re.sub(rb'\\([0-7]{3})', lambda m: bytes([int(m.group(1), 8)]),
                line.split()[4]).decode(errors='replace')
    if mp.startswith(root):
        print('check.sh: removing stale mount', mp, file=sys.stderr)
        subprocess.run(['fusermount3', '-uz', mp])
PYEOF

rm -f "$BUILD/pytest-junit.xml" "$BUILD/meson-logs/testlog.junit.xml"
meson test -C "$BUILD" --print-errorlogs
meson_rc=$?

"$PY" - "$BUILD" "$meson_rc" <<'PYEOF'
import os, sys
import xml.etree.ElementTree as ET

build, meson_rc = sys.argv[1], int(sys.argv[2])
counts = {'passed': 0, 'failed': 0, 'skipped': 0}

def outcome(tc):
    if tc.find('failure') is not None or tc.find('error') is not None:
        return 'failed'
    if tc.find('skipped') is not None:
        return 'skipped'
    return 'passed'

def is_integration(suite, tc):
    return ':integration /' in (suite.get('name', '') + ' ' +
                                tc.get('name', '') + ' ' +
                                tc.get('classname', ''))

integration_meson = None
meson_log = os.path.join(build, 'meson-logs', 'testlog.junit.xml')
try:
    for suite in ET.parse(meson_log).getroot().iter('testsuite'):
        for tc in suite.iter('testcase'):
            if is_integration(suite, tc):
                integration_meson = outcome(tc)
            else:
                counts[outcome(tc)] += 1
except (OSError, ET.ParseError) as e:
    print('check.sh: cannot read %s: %s' % (meson_log, e), file=sys.stderr)
    counts['failed'] += 1

pytest_log = os.path.join(build, 'pytest-junit.xml')
try:
    for tc in ET.parse(pytest_log).getroot().iter('testcase'):
        counts[outcome(tc)] += 1
except (OSError, ET.ParseError) as e:
    print('check.sh: cannot read %s: %s' % (pytest_log, e), file=sys.stderr)
    counts['failed'] += 1
else:
    # pytest wrote its cases, but meson says the run failed (e.g. timed
    # out, or an error outside any case): count that too.
    if integration_meson == 'failed' and counts['failed'] == 0:
        counts['failed'] += 1
if meson_rc != 0 and counts['failed'] == 0:
    print('check.sh: meson test failed (exit %d)' % meson_rc,
          file=sys.stderr)
    counts['failed'] += 1

line = '%d passed, %d failed' % (counts['passed'], counts['failed'])
if counts['skipped']:
    line += ', %d skipped' % counts['skipped']
print(line)
sys.exit(1 if counts['failed'] else 0)
PYEOF
