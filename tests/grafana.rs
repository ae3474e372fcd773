//! The Grafana dashboard queries only metrics postern exports, and the
//! provisioning file is there.

use std::collections::BTreeSet;

#[test]
fn every_dashboard_query_uses_exported_metrics() {
    let (_registry, metrics) = postern::metrics::Metrics::new_registry().unwrap();
    let exported: BTreeSet<String> = metrics.names().into_iter().collect();
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/grafana/postern-dashboard.json"
    ))
    .unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut queries = Vec::new();
    for panel in dash["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            queries.push(target["expr"].as_str().unwrap().to_owned());
        }
    }
    assert!(
        queries.len() >= 10,
        "dashboard has {} queries",
        queries.len()
    );
    let mut used = BTreeSet::new();
    for q in &queries {
        let mut rest = q.as_str();
        while let Some(i) = rest.find("postern_") {
            let name: String = rest[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[i + name.len()..];
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(&name)
                .to_owned();
            used.insert(base);
        }
    }
    let unknown: Vec<_> = used.difference(&exported).collect();
    assert!(
        unknown.is_empty(),
        "dashboard uses metrics postern does not export: {unknown:?}"
    );
    // Every exported metric is on the dashboard somewhere.
    let unused: Vec<_> = exported.difference(&used).collect();
    assert!(
        unused.is_empty(),
        "metrics missing from the dashboard: {unused:?}"
    );
}

#[test]
fn provisioning_file_points_at_a_dashboard_folder() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/grafana/provisioning.yaml"
    ))
    .unwrap();
    assert!(
        text.contains("apiVersion: 1") && text.contains("type: file"),
        "{text}"
    );
}
