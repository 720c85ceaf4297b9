#!/usr/bin/env bash
# Checks the deploy files as far as a machine without a Docker engine can:
# scripts parse, compose renders (when the docker CLI has `compose`), every
# YAML and JSON file parses, the Dockerfile builds binaries and targets that
# exist, every file compose mounts exists, and the compose config keeps the
# example config's shape and passes the binaries' --check-config (as do the
# cluster profile's and Kubernetes' configs), and deploy/k8s renders with
# kubectl kustomize and passes kubernetes-validate where installed. Run by
# scripts/test.sh after the cargo tests.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

failures=0
ok() { printf '  ok    %s\n' "$*"; }
skip() { printf '  skip  %s\n' "$*"; }
fail() { printf '  FAIL  %s\n' "$*" >&2; failures=$((failures + 1)); }

# Files we own and check; target/ and .git/ are never looked at.
mapfile -t yaml_files < <(find . \( -path ./target -o -path ./.git -o -path ./.run \) -prune -o \
  -type f \( -name '*.yml' -o -name '*.yaml' \) -print | sort)
mapfile -t json_files < <(find deploy -type f -name '*.json' | sort)
mapfile -t shell_files < <(find scripts -type f -name '*.sh' | sort; echo .ci/run)

echo "check-deploy: shell scripts"
for f in "${shell_files[@]}"; do
  if bash -n "$f"; then ok "bash -n $f"; else fail "bash -n $f"; fi
done
# ShellCheck is a developer tool, not a dependency: use it only where installed.
if command -v shellcheck >/dev/null 2>&1; then
  if shellcheck -x "${shell_files[@]}" scripts/demo.env; then ok "shellcheck"; else fail "shellcheck"; fi
else
  skip "shellcheck not installed (apt-get install shellcheck)"
fi

echo "check-deploy: docker compose"
if docker compose version >/dev/null 2>&1; then
  # Placeholder secrets: compose refuses to render without them (see .env.example).
  if SLUICE_DEMO_WHATZME_SECRET=${SLUICE_DEMO_WHATZME_SECRET:-check-deploy-placeholder} \
    SLUICE_ID_DIGEST_KEY=${SLUICE_ID_DIGEST_KEY:-check-deploy-placeholder} \
    docker compose -f docker-compose.yml config -q; then
    ok "docker compose config -q"
  else
    fail "docker compose config -q"
  fi
else
  skip "this docker CLI has no 'compose' command: docker-compose.yml checked as YAML only"
fi

# PyYAML parses the YAML; pip installs it where it is missing (CI machines have pip).
PYTHON=python3
if ! "$PYTHON" -c 'import yaml' 2>/dev/null; then
  "$PYTHON" -m pip install --quiet --disable-pip-version-check pyyaml >/dev/null 2>&1 \
    || { echo "check-deploy: error: PyYAML is missing and 'pip install pyyaml' failed" >&2; exit 1; }
fi

echo "check-deploy: YAML, JSON, Dockerfile, mounts, config"
# One Python run for the structured checks; it prints ok/FAIL lines and exits 1 on any failure.
if ! "$PYTHON" - "${#yaml_files[@]}" "${yaml_files[@]}" "${json_files[@]}" <<'EOF'; then failures=$((failures + 1)); fi
import json, os, re, sys, tomllib
import yaml

n_yaml = int(sys.argv[1])
yaml_files, json_files = sys.argv[2:2 + n_yaml], sys.argv[2 + n_yaml:]
failed = False

def ok(msg): print(f"  ok    {msg}")
def fail(msg):
    global failed
    failed = True
    print(f"  FAIL  {msg}", file=sys.stderr)

for path in yaml_files:
    try:
        with open(path) as f: list(yaml.safe_load_all(f))
        ok(f"YAML {path}")
    except Exception as e:
        fail(f"YAML {path}: {e}")
for path in json_files:
    try:
        with open(path) as f: json.load(f)
        ok(f"JSON {path}")
    except Exception as e:
        fail(f"JSON {path}: {e}")

# Binary names each crate builds: its [[bin]] names, else the package name for src/main.rs.
bins = set()
for crate in ("gateway", "worker"):
    with open(f"{crate}/Cargo.toml", "rb") as f: manifest = tomllib.load(f)
    names = [b["name"] for b in manifest.get("bin", [])]
    if not names and os.path.exists(f"{crate}/src/main.rs"):
        names = [manifest["package"]["name"]]
    bins.update(names)

dockerfile = open("deploy/Dockerfile").read()
stages = set(re.findall(r"(?im)^FROM\s+\S+\s+AS\s+(\S+)", dockerfile))
named = set(re.findall(r"(?:target/release|/usr/local/bin|/out)/([A-Za-z0-9_-]+)", dockerfile))
for name in sorted(named):
    if name in bins: ok(f"Dockerfile binary {name} is a [[bin]] of gateway/ or worker/")
    else: fail(f"Dockerfile names binary {name}, but no crate builds it (bins: {sorted(bins)})")
for target in ("gateway", "worker"):
    if target in stages: ok(f"Dockerfile has target {target}")
    else: fail(f"Dockerfile has no stage 'AS {target}'")

# Every base image is pinned by digest (@sha256:) or named in the supply-chain
# doc's list of unpinned images, so an image added without a digest, or one
# pinned without the doc following, is caught here.
supply_doc = open("docs/supply-chain.md").read().partition("\n## Base images\n")[2].partition("\n## ")[0]
unpinned_doc = set(re.findall(r"(?m)^\| `([^`@]+)` \|", supply_doc))
if not unpinned_doc: fail("docs/supply-chain.md: no image table under '## Base images'")
images = [i for i in re.findall(r"(?im)^FROM\s+(?:--\S+\s+)*(\S+)", dockerfile) if i.lower() not in stages]
images += re.findall(r"(?im)^#\s*syntax=(\S+)", dockerfile)  # BuildKit pulls its frontend image too
with open("docker-compose.yml") as f: compose_images = yaml.safe_load(f)
images += [svc["image"] for svc in (compose_images.get("services") or {}).values()
           if "image" in svc and "build" not in svc]
for image in sorted(set(images)):
    if "@sha256:" in image: ok(f"image {image} is pinned by digest")
    elif image in unpinned_doc: ok(f"image {image} is unpinned, as docs/supply-chain.md says")
    else: fail(f"image {image} has no @sha256: digest and is not in docs/supply-chain.md's unpinned list")
for image in sorted(unpinned_doc - set(images)):
    fail(f"docs/supply-chain.md lists {image} as unpinned, but no deploy file uses it")

# Every build context, Dockerfile and bind mount that compose names must exist.
with open("docker-compose.yml") as f: compose = yaml.safe_load(f)
for name, service in (compose.get("services") or {}).items():
    build = service.get("build")
    if isinstance(build, dict):
        context = build.get("context", ".")
        dockerfile_path = os.path.join(context, build.get("dockerfile", "Dockerfile"))
        if os.path.isfile(dockerfile_path): ok(f"{name}: build file {dockerfile_path}")
        else: fail(f"{name}: build file {dockerfile_path} does not exist")
        if build.get("target") and build["target"] not in stages:
            fail(f"{name}: build target {build['target']} is not a stage of {dockerfile_path}")
    for volume in service.get("volumes", []):
        source = volume.get("source") if isinstance(volume, dict) else volume.split(":")[0]
        if source and source.startswith((".", "/")):
            if os.path.exists(source): ok(f"{name}: mount {source}")
            else: fail(f"{name}: mounts {source}, which does not exist")

# The compose config must keep the example's shape: a key added to one and not
# the other is how the two drift apart unnoticed.
def keys(table, prefix=""):
    out = set()
    for k, v in table.items():
        path = f"{prefix}{k}"
        if isinstance(v, dict): out |= keys(v, path + ".")
        elif isinstance(v, list) and v and all(isinstance(i, dict) for i in v):
            for i, item in enumerate(v): out |= keys(item, f"{path}[{i}].")
        else: out.add(path)
    return out
try:
    with open("deploy/sluice.compose.toml", "rb") as f: compose_cfg = tomllib.load(f)
    with open("config/sluice.example.toml", "rb") as f: example_cfg = tomllib.load(f)
    ok("TOML deploy/sluice.compose.toml")
    only_compose = keys(compose_cfg) - keys(example_cfg)
    only_example = keys(example_cfg) - keys(compose_cfg)
    if only_compose or only_example:
        fail(f"deploy/sluice.compose.toml and config/sluice.example.toml differ in keys: "
             f"only in compose {sorted(only_compose)}, only in example {sorted(only_example)}")
    else:
        ok("deploy/sluice.compose.toml has the same keys as config/sluice.example.toml")
except Exception as e:
    fail(f"TOML: {e}")

sys.exit(1 if failed else 0)
EOF

echo "check-deploy: Kubernetes manifests (deploy/k8s)"
# kubectl renders the kustomization without a cluster; kubernetes-validate
# (pip install kubernetes-validate) checks the built-in kinds against their
# schemas offline. The CRDs (RabbitmqCluster, ScaledObject, ServiceMonitor)
# have no schema there: they are checked as YAML only.
if command -v kubectl >/dev/null 2>&1; then
  rendered=$(mktemp)
  if kubectl kustomize deploy/k8s >"$rendered"; then
    ok "kubectl kustomize deploy/k8s"
    if command -v kubernetes-validate >/dev/null 2>&1; then
      if kubernetes-validate --strict --quiet --no-warn -k 1.29.0 "$rendered"; then
        ok "kubernetes-validate --strict (built-in kinds, Kubernetes 1.29)"
      else
        fail "kubernetes-validate --strict deploy/k8s"
      fi
    else
      skip "kubernetes-validate not installed (pip install kubernetes-validate)"
    fi
  else
    fail "kubectl kustomize deploy/k8s"
  fi
  rm -f "$rendered"
else
  skip "kubectl not installed: deploy/k8s checked as YAML only"
fi

echo "check-deploy: the deploy configs through the binaries' own loader"
# The binaries validate far more than TOML syntax (types, durations, secrets).
# cargo build is a no-op when they are fresh, and a stale binary would judge an old loader.
if cargo build --quiet --bins; then
  # Placeholders for the secrets the configs point at, as compose and the
  # Kubernetes Deployments would pass them.
  placeholder=check-deploy-placeholder
  amqp_placeholder=amqp://user:pass@rabbitmq:5672/%2f
  for config in deploy/sluice.compose.toml deploy/cluster/sluice.toml deploy/k8s/sluice.toml; do
    for name in gateway worker; do
      bin=${CARGO_TARGET_DIR:-target}/debug/sluice-$name
      if SLUICE_DEMO_WHATZME_SECRET=${SLUICE_DEMO_WHATZME_SECRET:-$placeholder} \
        SLUICE_ID_DIGEST_KEY=${SLUICE_ID_DIGEST_KEY:-$placeholder} \
        SLUICE_WHATZME_SECRET=$placeholder SLUICE_REDIS_URL=redis://:pass@unused:6379 \
        SLUICE_AMQP_URL_0=$amqp_placeholder SLUICE_AMQP_URL_1=$amqp_placeholder \
        SLUICE_AMQP_URL_2=$amqp_placeholder \
        timeout 30 "$bin" --config "$config" --check-config; then
        ok "sluice-$name --config $config --check-config"
      else
        fail "sluice-$name --config $config --check-config (exit $?)"
      fi
    done
  done
else
  fail "cargo build --bins (needed to check the config with the binaries)"
fi

if ((failures > 0)); then
  echo "check-deploy: failed (see the FAIL lines above)" >&2
  exit 1
fi
echo "check-deploy: all checks passed"
