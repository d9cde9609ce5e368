#!/usr/bin/env bash
# Check the deployment: the generated blocks against config/egress.yaml (policy-sync --check), the
# rendered policies against the proxy's validator, cfn-lint, checkov, the CloudFormation Guard
# invariants (and their own tests, which seed every violation), the principals rendering
# (deploy/tests/test_principals.py), and deploy/verify-egress against moto's server. Exits
# non-zero on any finding. Called by .ci/run.
# Tools: cfn-lint and checkov in a venv; cfn-guard from crates.io into ~/.cargo/bin (a few minutes
# to compile once, then reused); all pinned.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CFN_LINT_VERSION=1.58.0
CHECKOV_VERSION=3.3.30
CFN_GUARD_VERSION=3.2.1
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

# The rendered deploy policies (both flavours, with and without port 80) must also pass the
# proxy's own validator, when a build exists.
bin=target/release/egress-proxy
if [[ -x $bin ]] && "$bin" validate --help >/dev/null 2>&1; then
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
  for flavour in ecs nat; do
    for http in "" --no-http; do
      "$VENV/bin/python" deploy/policy-sync.py --emit "$flavour" $http --region eu-west-1 >"$tmp/$flavour.yaml"
      echo "== egress-proxy validate ($flavour policy${http:+, $http})"
      "$bin" validate --config "$tmp/$flavour.yaml"
    done
    # ... and with the stack parameters Principals (one workload mid-rotation) and RequirePrincipal.
    sample="etl=sha256:$(printf a | sha256sum | cut -c1-64),ci=sha256:$(printf b | sha256sum | cut -c1-64);sha256:$(printf c | sha256sum | cut -c1-64)"
    "$VENV/bin/python" deploy/policy-sync.py --emit "$flavour" --region eu-west-1 \
      --principals "$sample" --require-principal true >"$tmp/$flavour-principals.yaml"
    echo "== egress-proxy validate ($flavour policy, Principals + RequirePrincipal=true)"
    "$bin" validate --config "$tmp/$flavour-principals.yaml"
  done
fi

echo "== cfn-lint ${templates[*]}"
"$VENV/bin/cfn-lint" "${templates[@]}"

echo "== checkov"
# --skip-download: no calls to the vendor's platform (CI has no general internet access).
BC_SKIP_MAPPING=TRUE "$VENV/bin/checkov" -d deploy/cloudformation --framework cloudformation \
  --quiet --compact --skip-download

guard=$(command -v cfn-guard || echo "$HOME/.cargo/bin/cfn-guard")
if ! "$guard" --version 2>/dev/null | grep -q " $CFN_GUARD_VERSION\$"; then
  echo "check.sh: installing cfn-guard $CFN_GUARD_VERSION with cargo (compiles once, a few minutes)"
  cargo install --locked --quiet cfn-guard --version "$CFN_GUARD_VERSION"
  guard=$HOME/.cargo/bin/cfn-guard
fi
echo "== cfn-guard test (each rule fails on its seeded violation)"
"$guard" test -r deploy/guard/egress.guard -t deploy/guard/egress-tests.yaml >"${tmp:-/tmp}/guard-test.log" 2>&1 \
  || { grep -v 'No Test expectation' "${tmp:-/tmp}/guard-test.log"; exit 1; }
echo "== cfn-guard validate ${templates[*]}"
"$guard" validate -r deploy/guard/egress.guard -d deploy/cloudformation --show-summary fail

echo "== NAT-instance user data (bash -n) and its watchdog (scripted stubs)"
python3 deploy/tests/test_nat_instance.py

echo "== principals: the templates' Principals/RequirePrincipal rendering, Rules, deploy/new-principal"
"$VENV/bin/python" deploy/tests/test_principals.py

echo "== verify-egress against moto's server (compliant VPC, each violation seeded)"
python3 deploy/tests/test_verify_egress.py

echo "deploy checks OK: policy sync, cfn-lint, checkov, cfn-guard, NAT watchdog, principals, verify-egress"
