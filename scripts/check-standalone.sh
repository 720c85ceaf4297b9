#!/usr/bin/env bash
# The repository stands alone: no tracked file reads or cites anything beside
# it (a shared folder beside the checkout, a design or style document kept elsewhere, the
# tool library). Fixtures live in tests/fixtures/ and the contract in docs/.
# CI proves the rest by running the test command on a fresh clone with
# nothing beside it.
set -euo pipefail
cd "$(dirname "$0")/.."

pattern='\.\./shared/|\.\./\.\./shared|DESIGN\.md|DESIGN §|STYLE\.md|\.\./\.library'
if hits=$(git ls-files -z | xargs -0 grep -nE "$pattern" -- 2>/dev/null | grep -v '^scripts/check-standalone.sh:'); then
  echo "these lines reach outside the repository; copy what they need in (tests/fixtures/, docs/):" >&2
  echo "$hits" >&2
  exit 1
fi
fixtures=$(git ls-files tests/fixtures | wc -l)
if (( fixtures == 0 )); then
  echo "tests/fixtures/ holds no tracked fixture: the provider tests need them in the repository" >&2
  exit 1
fi
echo "stands alone: no reference outside the repository; $fixtures fixtures tracked"
