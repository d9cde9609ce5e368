#!/usr/bin/env bash
# Lint the deployment: cfn-lint and checkov over every template, and the embedded policy copy
# against config/egress.yaml. Exits non-zero on any lint error, failed checkov check, or drift.
# Called by .ci/run. Tools are installed into a venv on first use (pinned: versions verified).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CFN_LINT_VERSION=1.58.0
CHECKOV_VERSION=3.3.30
VENV=${EGRESS_DEPLOY_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/egress-proxy/venv-deploy}

have() { "$VENV/bin/python" -m pip show "$1" 2>/dev/null | grep -x "Version: $2" >/dev/null; }
if ! { have cfn-lint "$CFN_LINT_VERSION" && have checkov "$CHECKOV_VERSION"; } 2>/dev/null; then
  echo "check.sh: installing cfn-lint $CFN_LINT_VERSION and checkov $CHECKOV_VERSION into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    "cfn-lint==$CFN_LINT_VERSION" "checkov==$CHECKOV_VERSION"
fi

templates=(deploy/cloudformation/*.yaml)

echo "== policy-sync --check (templates embed config/egress.yaml)"
"$VENV/bin/python" deploy/policy-sync.py --check

# The rendered deploy policies must also pass the proxy's own validator, when a build exists.
bin=target/release/egress-proxy
if [[ -x $bin ]] && "$bin" validate --help >/dev/null 2>&1; then
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
  for flavour in ecs nat; do
    "$VENV/bin/python" deploy/policy-sync.py --emit "$flavour" --region eu-west-1 >"$tmp/$flavour.yaml"
    echo "== egress-proxy validate ($flavour policy)"
    "$bin" validate --config "$tmp/$flavour.yaml"
  done
fi

echo "== cfn-lint ${templates[*]}"
"$VENV/bin/cfn-lint" "${templates[@]}"

echo "== checkov"
# --skip-download: no calls to the vendor's platform (CI has no general internet access).
BC_SKIP_MAPPING=TRUE "$VENV/bin/checkov" -d deploy/cloudformation --framework cloudformation \
  --quiet --compact --skip-download

echo "deploy checks OK: policy sync, cfn-lint, checkov"
