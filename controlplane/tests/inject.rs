//! The sidecar injector on real AdmissionReview JSON (as kube-apiserver sends it for a
//! ReplicaSet's pod): the returned JSON Patch is decoded from base64 and applied with the
//! `json-patch` crate, and the resulting pod is checked the way the kubelet would see it.

use base64::Engine;
use serde_json::{Value, json};
use spillway_controlplane::inject::{InjectOptions, handle};

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/tests/fixtures/admission/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn opts() -> InjectOptions {
    InjectOptions {
        image: "registry.example.com/spillway/spillway-proxy:0.1.0".into(),
        control_plane: "https://spillway-control.spillway.svc:7000".into(),
        control_plane_ca_pem: Some("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into()),
        ..InjectOptions::default()
    }
}

/// The review's response, and the pod with its patch applied (the pod as sent when no patch).
fn review(name: &str) -> (Value, Value) {
    let body = fixture(name);
    let resp = serde_json::to_value(handle(&opts(), &body).unwrap()).unwrap();
    let mut pod: Value = serde_json::from_slice::<Value>(&body).unwrap()["request"]["object"].clone();
    if let Some(p) = resp["response"]["patch"].as_str() {
        assert_eq!(resp["response"]["patchType"], "JSONPatch");
        let bytes = base64::engine::general_purpose::STANDARD.decode(p).expect("base64 as the API requires");
        let patch: json_patch::Patch = serde_json::from_slice(&bytes).expect("a JSON Patch");
        json_patch::patch(&mut pod, &patch).expect("the patch applies to the pod");
    }
    (resp, pod)
}

fn env(c: &Value, name: &str) -> Option<Value> {
    c["env"].as_array()?.iter().find(|e| e["name"] == name).cloned()
}

#[test]
fn a_deployment_pod_gets_a_native_sidecar_first_and_its_sdks_pointed_at_it() {
    let (resp, pod) = review("pod-deployment.json");
    assert_eq!(
        (resp["apiVersion"].as_str(), resp["kind"].as_str()),
        (Some("admission.k8s.io/v1"), Some("AdmissionReview"))
    );
    assert_eq!(resp["response"]["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
    assert_eq!(resp["response"]["allowed"], true);
    assert!(resp["response"].get("warnings").is_none(), "{resp}");

    let init = pod["spec"]["initContainers"].as_array().unwrap();
    let sc = &init[0];
    assert_eq!((sc["name"].as_str(), sc["restartPolicy"].as_str()), (Some("spillway-proxy"), Some("Always")));
    assert_eq!(sc["image"], "registry.example.com/spillway/spillway-proxy:0.1.0");
    assert_eq!(env(sc, "SPILLWAY_LISTEN").unwrap()["value"], "127.0.0.1:4000", "loopback only");
    assert_eq!(env(sc, "SPILLWAY_CONTROL_PLANE").unwrap()["value"], "https://spillway-control.spillway.svc:7000");
    assert_eq!(env(sc, "POD_NAME").unwrap()["valueFrom"]["fieldRef"]["fieldPath"], "metadata.name");
    assert_eq!(env(sc, "SPILLWAY_NODE_ID").unwrap()["value"], "$(POD_NAMESPACE)/$(POD_NAME)");
    assert_eq!(
        env(sc, "SPILLWAY_ZONE").unwrap()["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.labels['topology.kubernetes.io/zone']"
    );
    assert_eq!(sc["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(sc["securityContext"]["runAsNonRoot"], true);
    assert_eq!(sc["resources"]["requests"], json!({"cpu": "50m", "memory": "64Mi"}));
    assert!(sc.get("envFrom").is_none(), "no credentials Secret configured");
    assert_eq!(sc["startupProbe"]["exec"]["command"], json!(["spillway-proxy", "--probe-ready"]));
    let mount = &sc["volumeMounts"][0];
    let volumes = pod["spec"]["volumes"].as_array().unwrap();
    assert_eq!(volumes.len(), 3, "the service-account volume is kept");
    assert!(volumes.iter().any(|v| v["name"] == mount["name"] && v["emptyDir"].is_object()));

    // Its identity for the control plane: a token bound to this pod, for spillway's audience
    // only, mounted read-only where the sidecar is told to read it; and the CA that signs the
    // control plane's certificate, so it speaks TLS and checks whom it talks to.
    let token = &sc["volumeMounts"][1];
    assert_eq!(token["readOnly"], true);
    let projected = volumes.iter().find(|v| v["name"] == token["name"]).unwrap();
    assert_eq!(
        projected["projected"]["sources"][0]["serviceAccountToken"],
        json!({"audience": "spillway", "expirationSeconds": 3600, "path": "token"})
    );
    let token_file = env(sc, "SPILLWAY_CONTROL_PLANE_TOKEN_FILE").unwrap()["value"].as_str().unwrap().to_owned();
    assert_eq!(token_file, format!("{}/token", token["mountPath"].as_str().unwrap()));
    assert!(env(sc, "SPILLWAY_CONTROL_PLANE_CA_PEM").unwrap()["value"].as_str().unwrap().contains("BEGIN CERTIFICATE"));
    assert_eq!(env(sc, "SPILLWAY_ALLOW_SECRET_ENV").unwrap()["value"], "*_API_KEY");

    // Both app containers reach the sidecar through their SDKs' own variables; a value the app
    // set itself is left alone.
    let app = &pod["spec"]["containers"][0];
    assert_eq!(env(app, "OPENAI_BASE_URL").unwrap()["value"], "http://127.0.0.1:4000/v1");
    assert_eq!(app["env"].as_array().unwrap().iter().filter(|e| e["name"] == "ANTHROPIC_BASE_URL").count(), 1);
    assert_eq!(env(app, "LOG_LEVEL").unwrap()["value"], "info");
    let agent = &pod["spec"]["containers"][1];
    assert_eq!(env(agent, "ANTHROPIC_BASE_URL").unwrap()["value"], "http://127.0.0.1:4000");
    assert_eq!(pod["metadata"]["annotations"]["spillway.dev/status"], "injected");
    assert_eq!(pod["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"], "2026-11-20T10:00:00Z");
}

#[test]
fn opted_out_already_injected_host_network_and_non_create_pods_are_left_alone() {
    for (name, warns) in [
        ("pod-opt-out.json", false),
        ("pod-opt-out-label.json", false),
        ("pod-already-injected.json", false),
        ("pod-update.json", false),
        ("pod-host-network.json", true),
    ] {
        let (resp, pod) = review(name);
        assert_eq!(resp["response"]["allowed"], true, "{name}");
        assert!(resp["response"].get("patch").is_none(), "{name}: {resp}");
        assert_eq!(resp["response"].get("warnings").is_some(), warns, "{name}: {resp}");
        let original: Value = serde_json::from_slice::<Value>(&fixture(name)).unwrap()["request"]["object"].clone();
        assert_eq!(pod, original, "{name}");
    }
    let (resp, _) = review("pod-host-network.json");
    assert!(resp["response"]["warnings"][0].as_str().unwrap().contains("hostNetwork"));
}

#[test]
fn init_containers_keep_their_order_after_the_sidecar_and_bad_annotations_only_warn() {
    let (resp, pod) = review("pod-init-containers-bad-annotations.json");
    assert_eq!(resp["response"]["allowed"], true, "a malformed optional annotation never blocks a pod");
    let names: Vec<&str> =
        pod["spec"]["initContainers"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["spillway-proxy", "migrate"], "the sidecar serves the other init containers");
    let warnings: Vec<&str> =
        resp["response"]["warnings"].as_array().unwrap().iter().map(|w| w.as_str().unwrap()).collect();
    assert_eq!(warnings.len(), 3, "{warnings:?}");
    assert!(warnings.iter().any(|w| w.contains("spillway.dev/proxy-port=\"eighty\"") && w.contains("using 4000")));
    assert!(warnings.iter().any(|w| w.contains("spillway.dev/proxy-memory=\"lots\"") && w.contains("using 64Mi")));
    assert!(warnings.iter().any(|w| w.contains("spillway.dev/inject=\"yes please\"")));
    let sc = &pod["spec"]["initContainers"][0];
    assert_eq!(sc["resources"]["requests"], json!({"cpu": "100m", "memory": "64Mi"}), "the valid one is honoured");
    assert_eq!(env(sc, "SPILLWAY_LISTEN").unwrap()["value"], "127.0.0.1:4000");
}

#[test]
fn a_bare_pod_gets_every_list_created() {
    let (_, pod) = review("pod-bare.json");
    assert_eq!(pod["spec"]["volumes"].as_array().unwrap().len(), 2, "state and identity token");
    assert_eq!(pod["spec"]["initContainers"].as_array().unwrap().len(), 1);
    assert_eq!(env(&pod["spec"]["containers"][0], "OPENAI_BASE_URL").unwrap()["value"], "http://127.0.0.1:4000/v1");
    assert_eq!(pod["metadata"]["annotations"], json!({"spillway.dev/status": "injected"}));
}

#[test]
fn malformed_reviews_are_refused_with_the_reason() {
    let cases: [(&[u8], &str); 4] = [
        (b"{not json", "not an AdmissionReview"),
        (br#"{"apiVersion": "v1", "kind": "Pod"}"#, "not an AdmissionReview: apiVersion \"v1\""),
        (br#"{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}"#, "without a request"),
        (
            br#"{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"kind": {}}}"#,
            "missing field `uid`",
        ),
    ];
    for (body, want) in cases {
        let e = handle(&opts(), body).unwrap_err();
        assert!(e.contains(want), "{e}");
    }
    // A review whose pod is unreadable is admitted untouched, with a warning.
    let body = br#"{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "x", "kind": {"kind": "Pod"}, "operation": "CREATE", "object": "garbage"}}"#;
    let r = serde_json::to_value(handle(&opts(), body).unwrap()).unwrap();
    assert_eq!((r["response"]["allowed"].as_bool(), r["response"].get("patch")), (Some(true), None));
    assert!(r["response"]["warnings"][0].as_str().unwrap().contains("no spec"));
}

#[test]
fn provider_credentials_come_from_a_secret_named_by_flag_or_annotation() {
    let mut body: Value = serde_json::from_slice(&fixture("pod-bare.json")).unwrap();
    let with = |opts: &InjectOptions, body: &Value| {
        let resp = serde_json::to_value(handle(opts, body.to_string().as_bytes()).unwrap()).unwrap();
        let bytes =
            base64::engine::general_purpose::STANDARD.decode(resp["response"]["patch"].as_str().unwrap()).unwrap();
        let mut pod = body["request"]["object"].clone();
        json_patch::patch(&mut pod, &serde_json::from_slice::<json_patch::Patch>(&bytes).unwrap()).unwrap();
        (pod["spec"]["initContainers"][0]["envFrom"].clone(), resp["response"]["warnings"].clone())
    };
    let flagged = InjectOptions { credentials_secret: Some("llm-keys".into()), ..opts() };
    assert_eq!(with(&flagged, &body).0, json!([{"secretRef": {"name": "llm-keys"}}]));
    body["request"]["object"]["metadata"]["annotations"] = json!({"spillway.dev/credentials-secret": "team-keys"});
    assert_eq!(with(&flagged, &body).0, json!([{"secretRef": {"name": "team-keys"}}]));
    body["request"]["object"]["metadata"]["annotations"] = json!({"spillway.dev/credentials-secret": "Team_Keys!"});
    let (env_from, warnings) = with(&flagged, &body);
    assert_eq!(env_from, json!([{"secretRef": {"name": "llm-keys"}}]));
    assert!(warnings[0].as_str().unwrap().contains("is not a Secret name; using llm-keys"), "{warnings}");
}

#[test]
fn manual_injection_rewrites_pod_templates_and_passes_everything_else_through() {
    use spillway_controlplane::inject::manifest;
    let app = std::fs::read_to_string(format!("{}/../examples/k8s/app.yaml", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let cron = "apiVersion: batch/v1\nkind: CronJob\nmetadata: { name: nightly }\nspec:\n  schedule: \"0 3 * * *\"\n  jobTemplate:\n    spec:\n      template:\n        metadata:\n          annotations: { spillway.dev/proxy-port: \"99999\" }\n        spec:\n          restartPolicy: OnFailure\n          containers: [{ name: job, image: busybox }]\n";
    let (out, warnings) = manifest::inject(&opts(), &format!("{app}\n---\n{cron}")).unwrap();
    let docs: Vec<Value> = serde_saphyr::from_multiple(&out).unwrap();
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["Namespace", "Secret", "ConfigMap", "Deployment", "CronJob"]);
    let original: Vec<Value> = serde_saphyr::from_multiple(&app).unwrap();
    assert_eq!(docs[..3], original[..3], "non-workloads pass through unchanged");
    let pod = &docs[3]["spec"]["template"];
    assert_eq!(pod["spec"]["initContainers"][0]["name"], "spillway-proxy");
    assert_eq!(pod["spec"]["initContainers"][0]["envFrom"], json!([{"secretRef": {"name": "llm-keys"}}]));
    assert_eq!(env(&pod["spec"]["containers"][0], "OPENAI_BASE_URL").unwrap()["value"], "http://127.0.0.1:4000/v1");
    assert_eq!(docs[3]["spec"]["selector"], original[3]["spec"]["selector"]);
    let job = &docs[4]["spec"]["jobTemplate"]["spec"]["template"];
    assert_eq!(job["spec"]["initContainers"][0]["name"], "spillway-proxy");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].starts_with("CronJob/nightly: spillway: annotation spillway.dev/proxy-port=\"99999\""));

    // Injecting the output again changes nothing: the sidecar is already there.
    let (again, _) = manifest::inject(&opts(), &out).unwrap();
    assert_eq!(serde_saphyr::from_multiple::<Value>(&again).unwrap(), docs);
    assert!(manifest::inject(&opts(), "kind: [unclosed").unwrap_err().starts_with("not Kubernetes YAML"));
}
