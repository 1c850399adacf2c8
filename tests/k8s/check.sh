#!/usr/bin/env bash
# The chart and the Kubernetes examples, checked offline: `helm lint --strict`, every rendering
# validated against the Kubernetes 1.33 schemas (kubernetes-validate --strict), the rendered
# routing config validated by `spillway-control check`, names that must agree checked
# (consistency.py), and the example app validated before and after `spillway-control inject`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
bash tests/k8s/setup.sh
tools="${SPILLWAY_K8S_TOOLS:-target/k8s-tools}"
helm="$tools/bin/helm"
validate=("$tools/venv/bin/kubernetes-validate" --strict -k 1.33.0 --quiet)
control=(cargo run -q --locked -p spillway-controlplane --bin spillway-control --)
out="target/k8s-check"
rm -rf "$out" && mkdir -p "$out"

for values in "" examples/k8s/values.yaml tests/k8s/values-full.yaml tests/k8s/values-insecure.yaml tests/k8s/values-etcd.yaml tests/k8s/values-objects.yaml; do
  name="${values:-defaults}"
  args=(--namespace spillway)
  [[ -n "$values" ]] && args+=(-f "$values")
  echo "chart with ${name}" >&2
  "$helm" lint --strict helm/spillway "${args[@]}"
  rendered="$out/$(basename "${values:-defaults.yaml}" .yaml).rendered.yaml"
  "$helm" template spillway helm/spillway "${args[@]}" > "$rendered"
  "${validate[@]}" "$rendered"
  "$tools/venv/bin/python" tests/k8s/consistency.py "$rendered" "$out/$(basename "$rendered" .rendered.yaml).routing.yaml"
  "${control[@]}" check "$out/$(basename "$rendered" .rendered.yaml).routing.yaml"
done

echo "the SpillwayRouting and SpillwayDemotion CRDs, as derived from the config model" >&2
"${control[@]}" crd > "$out/spillway.crds.yaml"
"${validate[@]}" "$out/spillway.crds.yaml"

echo "examples/k8s/app.yaml, as written and injected" >&2
"${validate[@]}" examples/k8s/app.yaml
"${control[@]}" inject -f examples/k8s/app.yaml > "$out/app.injected.yaml"
"${validate[@]}" "$out/app.injected.yaml"
grep -q "name: spillway-proxy" "$out/app.injected.yaml"
echo "k8s checks passed" >&2
