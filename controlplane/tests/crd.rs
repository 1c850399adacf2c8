//! The `SpillwayRouting` definition: derived from the config model, structural (as the API server
//! requires), and a spec for every example config in the repository.

use serde_json::Value;
use spillway_controlplane::crd::{SpillwayRouting, definition_yaml};

/// The definition of `kind`, of those the chart installs.
fn definition(kind: &str) -> Value {
    let yaml = definition_yaml();
    let docs: Vec<Value> =
        yaml.split("\n---\n").map(|d| serde_saphyr::from_str(d).expect("each definition is YAML")).collect();
    docs.into_iter().find(|d| d["spec"]["names"]["kind"] == kind).unwrap_or_else(|| panic!("no {kind} in {yaml}"))
}

fn schema() -> Value {
    definition("SpillwayRouting")["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"].clone()
}

#[test]
fn a_demotion_object_says_what_was_moved_and_whether_it_still_is() {
    let crd = definition("SpillwayDemotion");
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    let mut required: Vec<&str> = spec["required"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    required.sort_unstable();
    assert_eq!(required, ["active", "atUnixMs", "endpoint", "feature", "reason"], "{spec}");
    let columns = &crd["spec"]["versions"][0]["additionalPrinterColumns"];
    assert!(columns.as_array().unwrap().iter().any(|c| c["jsonPath"] == ".spec.active"), "{columns}");
}

#[test]
fn the_definition_describes_every_section_of_a_routing_file() {
    let spec = schema();
    for section in ["endpoints", "pools", "features", "breakers", "retry_budget"] {
        assert!(spec["properties"][section].is_object(), "no {section} in {spec}");
    }
    let endpoint = &spec["properties"]["endpoints"]["additionalProperties"];
    assert_eq!(endpoint["required"], serde_json::json!(["model", "provider"]), "{endpoint}");
    // Structural: one type per property; the two that take either form say so the Kubernetes way.
    let feature = &spec["properties"]["features"]["additionalProperties"]["properties"];
    assert_eq!(feature["hedge_after_ttft_ms"]["x-kubernetes-int-or-string"], true, "{feature}");
    let auth = &endpoint["properties"]["auth"];
    assert_eq!(auth["type"], "object");
    assert!(auth["properties"]["kind"]["enum"].as_array().unwrap().contains(&"aws_default".into()), "{auth}");
    assert!(!definition_yaml().contains("anyOf") && !definition_yaml().contains("oneOf"));
}

/// The routing configs the repository ships: the quick start's, and those the chart and its
/// example values carry.
fn shipped_configs() -> Vec<(String, String)> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut out = vec![(
        "examples/quickstart.yaml".to_owned(),
        std::fs::read_to_string(root.join("examples/quickstart.yaml")).unwrap(),
    )];
    for values in ["helm/spillway/values.yaml", "examples/k8s/values.yaml"] {
        let v: Value = serde_saphyr::from_str(&std::fs::read_to_string(root.join(values)).unwrap()).unwrap();
        out.push((
            values.to_owned(),
            v["routing"].as_str().unwrap_or_else(|| panic!("{values} has no routing")).to_owned(),
        ));
    }
    out
}

#[test]
fn every_shipped_config_is_a_valid_spec() {
    for (name, text) in shipped_configs() {
        let config = spillway_api::config::load_str(&text, &name).unwrap_or_else(|e| panic!("{name}: {e}"));
        let object = serde_json::json!({
            "apiVersion": "spillway.dev/v1alpha1",
            "kind": "SpillwayRouting",
            "metadata": {"name": "example", "namespace": "spillway"},
            "spec": config,
        });
        let parsed: SpillwayRouting = serde_json::from_value(object).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(parsed.spec.config, config, "{name} does not round-trip");
    }
}

/// The chart installs the definition from `crds/`; it must be the one the model derives.
#[test]
fn the_chart_installs_the_derived_definition() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../helm/spillway/crds/spillway.yaml");
    let installed = std::fs::read_to_string(&path).unwrap();
    assert!(
        installed == definition_yaml(),
        "{} is stale: run `cargo run -p spillway-controlplane --bin spillway-control -- crd > helm/spillway/crds/spillway.yaml`",
        path.display()
    );
}
