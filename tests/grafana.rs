//! The Grafana dashboard and the alert rules query only metrics postern
//! exports, the dashboard shows every one of them, the README and
//! docs/operations.md list exactly them, and the provisioning file is there.

use std::collections::BTreeSet;

/// The metric names in a PromQL expression (histogram suffixes dropped).
fn names_in(expr: &str) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    let mut rest = expr;
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
    used
}

fn exported() -> BTreeSet<String> {
    let (_registry, metrics) = postern::metrics::Metrics::new_registry().unwrap();
    metrics.names().into_iter().collect()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR")))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn every_dashboard_query_uses_exported_metrics() {
    let exported = exported();
    let process: BTreeSet<String> = postern::metrics::PROCESS_METRICS
        .iter()
        .map(|s| s.to_string())
        .collect();
    let dash: serde_json::Value =
        serde_json::from_str(&read("grafana/postern-dashboard.json")).unwrap();
    let mut queries = Vec::new();
    for panel in dash["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            queries.push(target["expr"].as_str().unwrap().to_owned());
        }
    }
    let vars: Vec<String> = dash["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["definition"].as_str().map(str::to_owned))
        .collect();
    for var in ["user", "upstream", "listener"] {
        assert!(
            dash["templating"]["list"]
                .as_array()
                .unwrap()
                .iter()
                .any(|v| v["name"] == var),
            "no ${var} variable"
        );
    }
    assert!(
        queries.len() >= 20,
        "dashboard has {} queries",
        queries.len()
    );
    let mut used = BTreeSet::new();
    for q in queries.iter().chain(&vars) {
        used.extend(names_in(q));
    }
    let unknown: Vec<_> = used
        .iter()
        .filter(|n| !exported.contains(*n) && !process.contains(*n))
        .collect();
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
fn the_alert_rules_use_exported_metrics() {
    let exported = exported();
    let text = read("contrib/prometheus/alerts.yml");
    let used = names_in(&text);
    assert!(used.len() >= 8, "{used:?}");
    let unknown: Vec<_> = used.difference(&exported).collect();
    assert!(
        unknown.is_empty(),
        "alerts use unknown metrics: {unknown:?}"
    );
}

/// The README's metrics table and the "Metrics, alerts and logs" section of
/// docs/operations.md name exactly the exported families.
#[test]
fn the_documented_metrics_are_the_exported_ones() {
    let exported = exported();
    let readme = read("README.md");
    let table: BTreeSet<String> = readme
        .lines()
        .filter_map(|l| l.strip_prefix("| `postern_"))
        .filter_map(|l| l.split('`').next())
        .map(|n| format!("postern_{n}"))
        .collect();
    let missing: Vec<_> = exported.difference(&table).collect();
    let extra: Vec<_> = table.difference(&exported).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "README metrics table: missing {missing:?}, not exported {extra:?}"
    );
    let ops = read("docs/operations.md");
    let start = ops
        .find("## Metrics, alerts and logs")
        .expect("docs/operations.md has a \"Metrics, alerts and logs\" section");
    let doc = &ops[start..];
    let doc = &doc[..doc[2..].find("\n## ").map_or(doc.len(), |i| i + 2)];
    let named = names_in(doc);
    let missing: Vec<_> = exported.difference(&named).collect();
    let extra: Vec<_> = named
        .iter()
        .filter(|n| {
            !exported.contains(*n) && !postern::metrics::PROCESS_METRICS.contains(&n.as_str())
        })
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "docs/operations.md: missing {missing:?}, not exported {extra:?}"
    );
    // And the result words a user sees in postern_messages_total.
    for word in postern::refusal::MESSAGE_RESULTS
        .iter()
        .chain(postern::refusal::RECIPIENT_RESULTS)
    {
        assert!(
            doc.contains(&format!("`{word}`")),
            "docs/operations.md does not explain `{word}`"
        );
    }
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

/// Runs `promtool` when it is installed (`.ci/run` installs Debian's
/// `prometheus` package); says so and passes when it is not.
fn promtool(args: &[&str], stdin: Option<&str>) -> Option<std::process::Output> {
    use std::io::Write as _;
    let mut child = match std::process::Command::new("promtool")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("promtool not available ({e}); skipped");
            return None;
        }
    };
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes()).expect("write to promtool");
    }
    Some(child.wait_with_output().expect("promtool"))
}

#[test]
fn promtool_accepts_the_rules_their_tests_and_a_scrape() {
    let Some(out) = promtool(&["check", "rules", "contrib/prometheus/alerts.yml"], None) else {
        return;
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = promtool(
        &["test", "rules", "contrib/prometheus/alerts.test.yml"],
        None,
    )
    .expect("promtool");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // A scrape of a configured postern, every series at 0, is valid exposition.
    let config =
        postern::Config::from_toml_str(&read("config/postern.toml"), "config/postern.toml")
            .expect("shipped config");
    let (registry, metrics) = postern::metrics::Metrics::new_registry().unwrap();
    metrics.prepare(&config);
    let scrape = postern::metrics::render(&registry);
    let out = promtool(&["check", "metrics"], Some(&scrape)).expect("promtool");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
