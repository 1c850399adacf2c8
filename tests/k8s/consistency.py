"""Names in a rendered chart that must agree, which neither helm lint nor schema validation sees:
the webhook configuration and Secret the control plane is told to use exist, the webhook's
Service and port exist, probes use declared ports, the routing ConfigMap is mounted at --config.
Writes the rendered routing config to argv[2] for `spillway-control check`."""
import sys
import yaml

docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
by = {(d["kind"], d["metadata"]["name"]): d for d in docs}
deploy = next(d for d in docs if d["kind"] == "Deployment")
pod = deploy["spec"]["template"]["spec"]
c = pod["containers"][0]
args = dict(a[2:].split("=", 1) for a in c["args"] if a.startswith("--") and "=" in a)
flags = {a for a in c["args"] if a.startswith("--")}
ports = {p["name"] for p in c["ports"]}
problems = []

def need(cond, what):
    if not cond:
        problems.append(what)

for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
    need(c[probe]["httpGet"]["port"] in ports, f"{probe} uses an undeclared port")
svc = by[("Service", deploy["metadata"]["name"])]
need(all(p["targetPort"] in ports for p in svc["spec"]["ports"]), "service targets an undeclared port")

config_dir = args["config"]
mount = next(m for m in c["volumeMounts"] if m["mountPath"] == config_dir)
volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
routing = by[("ConfigMap", volume["configMap"]["name"])]

webhooks = [d for d in docs if d["kind"] == "MutatingWebhookConfiguration"]
if webhooks:
    hook = webhooks[0]
    need(hook["metadata"]["name"] == args.get("webhook-configuration", hook["metadata"]["name"]),
         "--webhook-configuration does not name the rendered webhook configuration")
    cc = hook["webhooks"][0]["clientConfig"]["service"]
    need(cc["name"] == svc["metadata"]["name"], "the webhook calls another Service")
    need(cc["port"] in [p["port"] for p in svc["spec"]["ports"] if p["name"] == "webhook"], "webhook port not on the Service")
    need(cc["path"] == "/inject", "the webhook path is not /inject")
    if "--webhook-self-signed" in flags:
        need(args["webhook-service"] == svc["metadata"]["name"], "certificate made for another Service")
        role = by[("Role", deploy["metadata"]["name"])]
        need(any(args["webhook-secret"] in r.get("resourceNames", []) for r in role["rules"]), "RBAC does not cover the webhook Secret")
        cr = by[("ClusterRole", deploy["metadata"]["name"])]
        need(hook["metadata"]["name"] in cr["rules"][0]["resourceNames"], "RBAC does not cover the webhook configuration")
        need(pod["automountServiceAccountToken"] is True, "self-signed mode needs the service-account token")
    else:
        certs = [d for d in docs if d["kind"] == "Certificate"]
        cert = next(c for c in certs if c["spec"].get("dnsNames"))
        ca = next((c for c in certs if c["spec"].get("isCA")), None)
        need(ca is not None and cert["spec"]["issuerRef"]["name"] != ca["spec"]["issuerRef"]["name"],
             "the serving certificate is not issued by the chart's CA (a renewal would break every client's trust)")
        need(f"{svc['metadata']['name']}.spillway.svc" in cert["spec"]["dnsNames"], "certificate lacks the Service's name")
        need(any(v.get("secret", {}).get("secretName") == cert["spec"]["secretName"] for v in pod["volumes"]),
             "the Certificate's Secret is not mounted")
    url = args["sidecar-control-plane"]
    plaintext = "--insecure-plaintext" in flags
    need(url.startswith("http://" if plaintext else "https://"), f"sidecars are sent to {url} with plaintext={plaintext}")
    need(("--tls-from-webhook" in flags) or ("tls-cert" in args) or plaintext, "gRPC TLS is neither on nor explicitly off")
    if "tls-cert" in args:
        need(args.get("sidecar-control-plane-ca") == args["tls-cert"].rsplit("/", 1)[0] + "/ca.crt",
             "injected sidecars are not given the CA of the gRPC certificate")
    if "client-ca" in args:
        need("sidecar-client-cert-secret" in args, "mutual TLS, yet sidecars get no client certificate")

# Sidecar identity: verified with TokenReview unless explicitly opted out.
if "--insecure-self-declared-identity" in flags:
    need(not any(d["kind"] == "ClusterRoleBinding" and d["roleRef"]["name"] == "system:auth-delegator" for d in docs),
         "self-declared identities, yet TokenReview is granted")
    if not webhooks:
        need(pod["automountServiceAccountToken"] is False, "no API calls to make, yet the token is mounted")
else:
    sa = pod["serviceAccountName"]
    bound = [d for d in docs if d["kind"] == "ClusterRoleBinding" and any(s["name"] == sa for s in d["subjects"])]
    need(any(b["roleRef"]["name"] == "system:auth-delegator" for b in bound), "TokenReview is not granted (system:auth-delegator)")
    roles = [by.get(("ClusterRole", b["roleRef"]["name"])) for b in bound]
    need(any(r and any("nodes" in rule["resources"] and "get" in rule["verbs"] for rule in r["rules"]) for r in roles),
         "node zones cannot be read")
    need(pod["automountServiceAccountToken"] is True, "TokenReview needs the service-account token")

# Several replicas: a follower sends sidecars' telemetry to the leader's advertised gRPC address,
# in the scheme the server speaks (a redirect never turns TLS off, so a mismatch would strand it).
if "leader-election-lease" in args or "etcd-endpoints" in args:
    grpc_url = args.get("advertise-grpc-url", "")
    tls = "tls-cert" in args or "--tls-from-webhook" in c["args"]
    need(grpc_url.startswith("https://" if tls else "http://") and grpc_url.endswith(":7000"),
         f"replicas advertise no usable gRPC address for the leader's telemetry: {grpc_url!r}")

# Leader election: the Lease it is told to use is the one its Role may renew; replicas are named.
if "leader-election-lease" in args:
    role = by.get(("Role", deploy["metadata"]["name"] + "-leader"))
    need(role is not None and any(args["leader-election-lease"] in r.get("resourceNames", []) and "update" in r["verbs"]
                                  for r in role["rules"]), "RBAC does not cover the leader Lease")
    need(any(e["name"] == "POD_NAME" for e in c["env"]), "replicas have no POD_NAME to campaign with")
    need(role is not None and any(args.get("shared-state-configmap") in r.get("resourceNames", []) and "update" in r["verbs"]
                                  for r in role["rules"]), "replicas cannot share the leader's checkpoint (RBAC or flag missing)")
    need(role is not None and all(any("spillwaydemotions" in r["resources"] and verb in r["verbs"] for r in role["rules"])
                                  for verb in ("list", "create", "patch", "delete")),
         "replicas cannot share their demotions (SpillwayDemotion RBAC missing)")
    need(pod["automountServiceAccountToken"] is True, "leader election needs the service-account token")
elif "etcd-endpoints" in args:
    # etcd holds the election and the shared state: no Lease or ConfigMap RBAC is needed.
    need(not any(k[0] == "Role" and k[1].endswith("-leader") for k in by), "a Lease Role granted that etcd mode does not use")
    need(any(e["name"] == "POD_NAME" for e in c["env"]), "replicas have no POD_NAME to campaign with")
    need("advertise-admin-url" in args, "replicas do not advertise their admin URL (merged views, forwarding)")
    if "etcd-ca" in args:
        need(any(m["mountPath"] == "/etc/spillway/etcd-tls" for m in c["volumeMounts"]), "etcd TLS files are not mounted")
elif deploy["spec"]["replicas"] > 1:
    problems.append("several replicas without leader election would each lease the whole pool")

# Several replicas on the Kubernetes API find each other through the Service's endpoints.
if "peer-service" in args:
    svc = by.get(("Service", args["peer-service"]))
    need(svc is not None and any(p["name"] == "admin" for p in svc["spec"]["ports"]), "the peer Service has no port named admin")
    role = by.get(("Role", deploy["metadata"]["name"] + "-peers"))
    need(role is not None and any("endpointslices" in r["resources"] and "list" in r["verbs"] for r in role["rules"]),
         "RBAC does not let replicas list the Service's endpoints")
elif deploy["spec"]["replicas"] > 1 and "etcd-endpoints" not in args:
    problems.append("several replicas that cannot find each other: /v1/nodes would show one replica's sidecars")

# SpillwayRouting objects: the Role lets it watch them, write their status and its own object.
if "--routing-objects" in c["args"]:
    role = by.get(("Role", deploy["metadata"]["name"] + "-routing"))
    rules = role["rules"] if role else []
    def allows(resource, verb, name=None):
        return any(resource in r["resources"] and verb in r["verbs"] and (name is None or name in r.get("resourceNames", [name]))
                   for r in rules)
    for verb in ["get", "list", "watch", "create"]:
        need(allows("spillwayroutings", verb), f"RBAC does not let it {verb} SpillwayRouting objects")
    need(allows("spillwayroutings", "update", "spillway-admin"), "RBAC does not let the admin API replace its object")
    need(allows("spillwayroutings/status", "patch"), "RBAC does not let it write SpillwayRouting status")
    for verb in ["get", "list", "create", "delete"]:
        need(allows("controllerrevisions", verb), f"RBAC does not let it {verb} the config history (ControllerRevisions)")
    need(pod["automountServiceAccountToken"] is True, "watching SpillwayRouting objects needs the service-account token")
    vwc = [d for (k, _), d in by.items() if k == "ValidatingWebhookConfiguration"]
    if "webhook-listen" in args:
        need(len(vwc) == 1 and vwc[0]["webhooks"][0]["clientConfig"]["service"]["path"] == "/validate-routing",
             "SpillwayRouting objects are not checked at admission")
        if "webhook-self-signed" in c["args"]:
            need(args.get("webhook-validating-configuration") == vwc[0]["metadata"]["name"],
                 "the control plane writes its CA into another validating configuration")

with open(sys.argv[2], "w") as f:
    f.write(routing["data"]["routing.yaml"])
if problems:
    sys.exit(f"{sys.argv[1]}: " + "; ".join(problems))
