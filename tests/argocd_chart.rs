//! The embedded Argo CD chart (`templates/argocd`): snapshots of the four
//! reference value sets, the comparison with Helm's renderings of the upstream
//! chart (through `manifest-diff` when the shared reference data is present),
//! and targeted checks of value combinations the reference sets do not cover.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use tendril::Secret;
use tendril::chart::{
    Chart, ChartError, RenderOptions, RenderedManifest, Values, manifests_to_yaml,
};

/// A fixed Redis password so renderings are reproducible.
const REDIS_PASSWORD: &str = "test-redis-password-0123";

/// The four value sets Helm's reference renderings were made with.
const REFERENCE_SETS: &[&str] = &["default", "ingress", "lb-insecure", "private-repo"];

/// tendril's own value sets that combine keys of the surface
/// (`fixtures/argocd-values/combined-*.yaml`). Helm cannot run here: they are
/// compared with Helm's rendering when `reference/argo-cd/rendered/NAME.yaml`
/// exists beside the others, and snapshotted either way.
const COMBINED_SETS: &[&str] = &[
    "combined-grpc-exec",
    "combined-ha-scheduling",
    "combined-external-redis-rbac",
    "combined-tls-dex-metrics",
    "combined-redis-names",
];

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Loaded (and its templates compiled) once for the whole test binary.
static CHART: std::sync::LazyLock<Chart> = std::sync::LazyLock::new(|| {
    Chart::load(manifest_dir().join("templates/argocd"))
        .unwrap_or_else(|e| panic!("loading templates/argocd: {e}"))
});

fn chart() -> &'static Chart {
    &CHART
}

fn options(values_yaml: &str) -> RenderOptions {
    let mut values = Values::new();
    if !values_yaml.trim().is_empty() {
        values
            .merge_yaml(values_yaml, "test values")
            .unwrap_or_else(|e| panic!("test values: {e}"));
    }
    RenderOptions::new("argocd", "argocd")
        .with_values(values)
        .with_input("redis_password", Secret::new(REDIS_PASSWORD.to_string()))
}

fn render(values_yaml: &str) -> Vec<RenderedManifest> {
    chart()
        .render(&options(values_yaml))
        .unwrap_or_else(|e| panic!("render failed: {e}"))
}

fn render_err(values_yaml: &str) -> ChartError {
    match chart().render(&options(values_yaml)) {
        Ok(_) => panic!("render succeeded but an error was expected"),
        Err(e) => e,
    }
}

fn fixture(name: &str) -> String {
    let path = manifest_dir().join(format!("fixtures/argocd-values/{name}.yaml"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn find<'a>(ms: &'a [RenderedManifest], kind: &str, name: &str) -> &'a Value {
    &ms.iter()
        .find(|m| m.kind == kind && m.name == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in the rendering"))
        .object
}

fn has(ms: &[RenderedManifest], kind: &str, name: &str) -> bool {
    ms.iter().any(|m| m.kind == kind && m.name == name)
}

fn container<'a>(workload: &'a Value, name: &str) -> &'a Value {
    workload["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

fn env_names(c: &Value) -> Vec<String> {
    c["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|e| e["name"].as_str().expect("env name").to_string())
        .collect()
}

fn args(c: &Value) -> Vec<String> {
    c["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("arg").to_string())
        .collect()
}

fn data<'a>(ms: &'a [RenderedManifest], configmap: &str) -> &'a Value {
    &find(ms, "ConfigMap", configmap)["data"]
}

fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// The Argo CD workloads: (kind, name, container).
const WORKLOADS: &[(&str, &str, &str)] = &[
    (
        "StatefulSet",
        "argocd-application-controller",
        "application-controller",
    ),
    ("Deployment", "argocd-server", "server"),
    ("Deployment", "argocd-repo-server", "repo-server"),
    (
        "Deployment",
        "argocd-applicationset-controller",
        "applicationset-controller",
    ),
    (
        "Deployment",
        "argocd-notifications-controller",
        "notifications-controller",
    ),
    ("Deployment", "argocd-dex-server", "dex-server"),
    ("Deployment", "argocd-redis", "redis"),
];

// ---- snapshots of the reference value sets ---------------------------------

/// Long data values that Argo CD needs byte for byte (the default resource
/// exclusions, the public SSH host keys of the big Git hosts) are shown in the
/// snapshots as their sha256: the snapshot reviews the structure, and
/// `reference_renderings_match_through_manifest_diff` checks the exact text.
fn digest_long_data(mut manifests: Vec<RenderedManifest>) -> Vec<RenderedManifest> {
    use sha2::{Digest, Sha256};
    const KEYS: &[(&str, &str)] = &[
        ("argocd-cm", "resource.exclusions"),
        ("argocd-ssh-known-hosts-cm", "ssh_known_hosts"),
    ];
    for m in &mut manifests {
        for (name, key) in KEYS {
            if m.kind == "ConfigMap"
                && m.name == *name
                && let Some(v) =
                    std::sync::Arc::make_mut(&mut m.object).pointer_mut(&format!("/data/{key}"))
            {
                let text = v.as_str().unwrap_or_default();
                *v = serde_json::Value::String(format!(
                    "sha256:{}",
                    hex::encode(Sha256::digest(text.as_bytes()))
                ));
            }
        }
    }
    manifests
}

/// The objects in install order, each with the template it came from, as
/// JSON: the same content as the YAML output, in a form that reviews the data
/// rather than the printer (whose output `chart_render.rs` snapshots).
fn snapshot(name: &str) {
    let objects: Vec<Value> = digest_long_data(render(&fixture(name)))
        .into_iter()
        .map(|m| serde_json::json!({ "source": m.source, "object": m.object.as_ref() }))
        .collect();
    insta::assert_json_snapshot!(format!("argocd_{name}"), objects);
}

#[test]
fn snapshot_default() {
    snapshot("default");
}

#[test]
fn snapshot_ingress() {
    snapshot("ingress");
}

#[test]
fn snapshot_lb_insecure() {
    snapshot("lb-insecure");
}

#[test]
fn snapshot_private_repo() {
    snapshot("private-repo");
}

#[test]
fn snapshot_combined_sets() {
    for name in COMBINED_SETS {
        assert!(
            chart()
                .check_values(&options(&fixture(name)).values)
                .is_empty(),
            "{name} sets a key the chart does not act on"
        );
        snapshot(name);
    }
}

// ---- comparison with Helm's renderings of the upstream chart ---------------

/// `../shared` (CI keeps a copy beside the clone), or `TENDRIL_SHARED_DIR`.
fn shared_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("TENDRIL_SHARED_DIR") {
        return Some(PathBuf::from(dir));
    }
    let root = manifest_dir();
    [root.join("../shared"), root.join("../../shared")]
        .into_iter()
        .find(|p| p.join("tools/manifest-diff").is_file())
}

fn manifest_diff(tool: &Path, reference: &Path, candidate: &Path) -> (bool, String) {
    let out = Command::new("python3")
        .arg(tool)
        .arg(reference)
        .arg(candidate)
        .output()
        .unwrap_or_else(|e| panic!("running python3 {}: {e}", tool.display()));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    (out.status.success(), text)
}

#[test]
fn reference_renderings_match_through_manifest_diff() {
    let Some(shared) = shared_dir() else {
        eprintln!(
            "\n!!! SKIPPED reference_renderings_match_through_manifest_diff: \
             no shared/tools/manifest-diff beside the checkout (set TENDRIL_SHARED_DIR) !!!\n"
        );
        return;
    };
    let tool = shared.join("tools/manifest-diff");
    let tmp = tempfile::tempdir().expect("temp dir");
    for name in COMBINED_SETS {
        let reference = shared.join(format!("reference/argo-cd/rendered/{name}.yaml"));
        if !reference.is_file() {
            eprintln!(
                "\n!!! SKIPPED the manifest-diff of {name}: no Helm rendering {} !!!\n",
                reference.display()
            );
            continue;
        }
        let candidate = tmp.path().join(format!("{name}.yaml"));
        std::fs::write(&candidate, manifests_to_yaml(&render(&fixture(name))))
            .expect("write rendering");
        let (ok, report) = manifest_diff(&tool, &reference, &candidate);
        assert!(
            ok && report.contains("missing 0, differing 0, unexpected 0"),
            "{name}:\n{report}"
        );
    }
    for name in REFERENCE_SETS {
        // The value files in fixtures/ must be the ones Helm used.
        let reference_values = shared.join(format!("reference/argo-cd/values/{name}.yaml"));
        let theirs = std::fs::read_to_string(&reference_values)
            .unwrap_or_else(|e| panic!("{}: {e}", reference_values.display()));
        assert_eq!(
            theirs,
            fixture(name),
            "fixtures/argocd-values/{name}.yaml is stale"
        );

        let candidate = tmp.path().join(format!("{name}.yaml"));
        std::fs::write(&candidate, manifests_to_yaml(&render(&theirs))).expect("write rendering");
        let reference = shared.join(format!("reference/argo-cd/rendered/{name}.yaml"));
        let (ok, report) = manifest_diff(&tool, &reference, &candidate);
        let summary = report.lines().last().unwrap_or_default().to_string();
        let (matched, total) = summary
            .strip_prefix("matched ")
            .and_then(|s| s.split_once(" objects"))
            .and_then(|(m, _)| m.split_once('/'))
            .unwrap_or_else(|| panic!("{name}: unexpected manifest-diff output:\n{report}"));
        assert_eq!(
            matched, total,
            "{name}: not every object matched:\n{report}"
        );
        assert_eq!(
            summary,
            format!("matched {total}/{total} objects, missing 0, differing 0, unexpected 0"),
            "{name}:\n{report}"
        );
        assert!(ok, "{name}: manifest-diff exited non-zero:\n{report}");
    }
}

// ---- shape of the default rendering ------------------------------------------

#[test]
fn default_rendering_has_every_component_and_three_crds() {
    let ms = render("");
    for (kind, name, _) in WORKLOADS {
        assert!(has(&ms, kind, name), "{kind} {name} missing");
    }
    let crds: Vec<&str> = ms
        .iter()
        .filter(|m| m.kind == "CustomResourceDefinition")
        .map(|m| m.name.as_str())
        .collect();
    assert_eq!(
        crds,
        [
            "applications.argoproj.io",
            "applicationsets.argoproj.io",
            "appprojects.argoproj.io"
        ]
    );
    // Hooks are replaced by the Secret tendril renders itself.
    assert!(!ms.iter().any(|m| m.kind == "Job"));
    assert!(has(&ms, "Secret", "argocd-redis"));
    // 55 objects of the upstream chart without its 4 hook objects, plus argocd-redis.
    assert_eq!(ms.len(), 56);
}

#[test]
fn crds_carry_no_description_text() {
    fn walk(v: &Value, path: &str) {
        match v {
            Value::Object(m) => {
                // A property may be *named* description (AppProject has one);
                // description *text* would be a string.
                assert!(
                    !m.get("description").is_some_and(Value::is_string),
                    "description at {path}"
                );
                for (k, x) in m {
                    walk(x, &format!("{path}.{k}"));
                }
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, path)),
            _ => {}
        }
    }
    for m in render("")
        .iter()
        .filter(|m| m.kind == "CustomResourceDefinition")
    {
        walk(&m.object, &m.name);
        let version = &m.object["spec"]["versions"][0];
        assert_eq!(
            version["schema"]["openAPIV3Schema"]["required"],
            serde_json::json!(["metadata", "spec"])
        );
    }
}

#[test]
fn rendering_is_deterministic_and_embedded_chart_is_the_same() {
    let a = manifests_to_yaml(&render(&fixture("private-repo")));
    let b = manifests_to_yaml(&render(&fixture("private-repo")));
    assert_eq!(a, b);
    let embedded = Chart::embedded("argocd").expect("embedded argocd chart");
    let c = manifests_to_yaml(
        &embedded
            .render(&options(&fixture("private-repo")))
            .expect("render embedded chart"),
    );
    assert_eq!(a, c, "the embedded archive differs from templates/argocd");
}

// ---- Redis password ----------------------------------------------------------

#[test]
fn redis_secret_comes_from_the_input_and_is_stable() {
    let ms = render("");
    let secret = find(&ms, "Secret", "argocd-redis");
    assert_eq!(secret["data"]["auth"], b64(REDIS_PASSWORD));
    // Every Argo CD component that talks to Redis requires that Secret.
    for (kind, name, c) in [
        (
            "StatefulSet",
            "argocd-application-controller",
            "application-controller",
        ),
        ("Deployment", "argocd-server", "server"),
        ("Deployment", "argocd-repo-server", "repo-server"),
    ] {
        let env = container(find(&ms, kind, name), c)["env"]
            .as_array()
            .unwrap()
            .clone();
        let pw = env
            .iter()
            .find(|e| e["name"] == "REDIS_PASSWORD")
            .expect("REDIS_PASSWORD");
        let r = &pw["valueFrom"]["secretKeyRef"];
        assert_eq!(
            (r["name"].as_str(), r["key"].as_str()),
            (Some("argocd-redis"), Some("auth"))
        );
        assert_eq!(r["optional"], false);
    }
    // Another password changes only that Secret.
    let other = chart()
        .render(&options("").with_input("redis_password", Secret::new("another".to_string())))
        .expect("render");
    let diff: Vec<&str> = ms
        .iter()
        .zip(&other)
        .filter(|(a, b)| a.object != b.object)
        .map(|(a, _)| a.name.as_str())
        .collect();
    assert_eq!(diff, ["argocd-redis"]);
}

#[test]
fn missing_redis_password_input_is_a_clear_error() {
    let opts = RenderOptions::new("argocd", "argocd");
    let err = chart()
        .render(&opts)
        .expect_err("render without redis_password");
    let text = format!("{err}");
    let chain = {
        let mut s = text.clone();
        let mut src = std::error::Error::source(&err);
        while let Some(e) = src {
            s.push_str(&format!(" / {e}"));
            src = e.source();
        }
        s
    };
    assert!(chain.contains("redis_password"), "{chain}");
}

// ---- component toggles -------------------------------------------------------

#[test]
fn dex_disabled_removes_dex_and_its_server_settings() {
    let ms = render("dex:\n  enabled: false\n");
    for kind in [
        "Deployment",
        "Service",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "NetworkPolicy",
    ] {
        assert!(
            !has(&ms, kind, "argocd-dex-server"),
            "{kind} argocd-dex-server still rendered"
        );
    }
    let params = data(&ms, "argocd-cmd-params-cm");
    assert!(params.get("server.dex.server").is_none());
    assert!(params.get("server.dex.server.strict.tls").is_none());
}

#[test]
fn dex_without_tls_uses_http() {
    let ms = render("configs:\n  params:\n    dexserver.disable.tls: true\n");
    let params = data(&ms, "argocd-cmd-params-cm");
    assert_eq!(params["server.dex.server"], "http://argocd-dex-server:5556");
    assert_eq!(params["dexserver.disable.tls"], "true");
}

#[test]
fn notifications_and_redis_can_be_disabled() {
    let ms = render("notifications:\n  enabled: false\nredis:\n  enabled: false\n");
    assert!(
        !ms.iter()
            .any(|m| m.name.starts_with("argocd-notifications"))
    );
    assert!(!has(&ms, "Deployment", "argocd-redis"));
    assert!(!has(&ms, "Service", "argocd-redis"));
    assert!(!has(&ms, "ConfigMap", "argocd-redis-health-configmap"));
    // The password Secret stays: the components still read it.
    assert!(has(&ms, "Secret", "argocd-redis"));
    assert_eq!(data(&ms, "argocd-cmd-params-cm")["redis.server"], "");
    // The repo server no longer admits the notifications controller.
    let np = find(&ms, "NetworkPolicy", "argocd-repo-server");
    let peers = np["spec"]["ingress"][0]["from"].as_array().unwrap();
    assert_eq!(peers.len(), 3);
    assert!(!peers.iter().any(
        |p| p["podSelector"]["matchLabels"]["app.kubernetes.io/name"]
            == "argocd-notifications-controller"
    ));
}

#[test]
fn external_redis_replaces_the_bundled_one() {
    let ms = render(
        "redis:\n  enabled: false\nexternalRedis:\n  host: redis.example.com\n  port: 6380\n  existingSecret: my-redis\n",
    );
    assert_eq!(
        data(&ms, "argocd-cmd-params-cm")["redis.server"],
        "redis.example.com:6380"
    );
    assert!(!has(&ms, "Secret", "argocd-redis"));
    let server = container(find(&ms, "Deployment", "argocd-server"), "server");
    let pw = server["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "REDIS_PASSWORD")
        .unwrap();
    assert_eq!(pw["valueFrom"]["secretKeyRef"]["name"], "my-redis");
    assert_eq!(pw["valueFrom"]["secretKeyRef"]["key"], "redis-password");
    assert_eq!(pw["valueFrom"]["secretKeyRef"]["optional"], false);
}

// ---- replicas ----------------------------------------------------------------

#[test]
fn ha_replicas_reach_workloads_and_settings() {
    let ms = render(
        "controller:\n  replicas: 2\nserver:\n  replicas: 3\nrepoServer:\n  replicas: 3\napplicationSet:\n  replicas: 2\n",
    );
    let sts = find(&ms, "StatefulSet", "argocd-application-controller");
    assert_eq!(sts["spec"]["replicas"], 2);
    let env = container(sts, "application-controller")["env"]
        .as_array()
        .unwrap()
        .clone();
    let replicas = env
        .iter()
        .find(|e| e["name"] == "ARGOCD_CONTROLLER_REPLICAS")
        .unwrap();
    assert_eq!(replicas["value"], "2");
    assert_eq!(
        find(&ms, "Deployment", "argocd-server")["spec"]["replicas"],
        3
    );
    assert_eq!(
        find(&ms, "Deployment", "argocd-repo-server")["spec"]["replicas"],
        3
    );
    assert_eq!(
        find(&ms, "Deployment", "argocd-applicationset-controller")["spec"]["replicas"],
        2
    );
    // Two ApplicationSet controllers need leader election.
    assert_eq!(
        data(&ms, "argocd-cmd-params-cm")["applicationsetcontroller.enable.leader.election"],
        "true"
    );
    // Notifications, Dex and Redis stay single.
    for name in [
        "argocd-notifications-controller",
        "argocd-dex-server",
        "argocd-redis",
    ] {
        assert_eq!(
            find(&ms, "Deployment", name)["spec"]["replicas"],
            1,
            "{name}"
        );
    }
}

// ---- server Service and Ingress ---------------------------------------------

#[test]
fn ingress_with_tls_extra_hosts_and_insecure_backend() {
    let ms = render(
        "global:\n  domain: cd.example.org\nconfigs:\n  params:\n    server.insecure: true\n\
         server:\n  ingress:\n    enabled: true\n    ingressClassName: traefik\n    tls: true\n\
         \x20   annotations:\n      a.example/x: \"1\"\n\
         \x20   extraHosts:\n    - name: alt.example.org\n      path: /alt\n",
    );
    let ing = find(&ms, "Ingress", "argocd-server");
    assert_eq!(ing["metadata"]["annotations"]["a.example/x"], "1");
    assert_eq!(ing["spec"]["ingressClassName"], "traefik");
    let rules = ing["spec"]["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 2);
    assert_eq!(rules[0]["host"], "cd.example.org");
    assert_eq!(rules[1]["host"], "alt.example.org");
    assert_eq!(rules[1]["http"]["paths"][0]["path"], "/alt");
    assert_eq!(rules[1]["http"]["paths"][0]["pathType"], "Prefix");
    // Insecure server: the Ingress talks plain HTTP to the Service's port 80.
    for r in rules {
        assert_eq!(
            r["http"]["paths"][0]["backend"]["service"]["port"]["number"],
            80
        );
        assert_eq!(
            r["http"]["paths"][0]["backend"]["service"]["name"],
            "argocd-server"
        );
    }
    assert_eq!(
        ing["spec"]["tls"],
        serde_json::json!([{"hosts": ["cd.example.org", "alt.example.org"], "secretName": "argocd-server-tls"}])
    );
    assert_eq!(data(&ms, "argocd-cm")["url"], "https://cd.example.org");
    assert_eq!(
        data(&ms, "argocd-notifications-cm")["context"],
        "argocdUrl: https://cd.example.org\n"
    );
}

/// Text upstream writes with `toYaml` inside a ConfigMap value has Helm's
/// bytes: go-yaml's key order (`env9` before `env10`), YAML 1.1 words
/// double-quoted, an indicator first single-quoted, a long line folded after
/// 80 columns, a space before a line break forcing double quotes. (The
/// expected texts were written by libyaml's emitter, which go-yaml ports.)
#[test]
fn texts_written_with_to_yaml_have_helms_bytes() {
    let ms = render(
        "global:\n  domain: cd.example.org\n\
         notifications:\n  context:\n    region: us-east-1\n    env10: b\n    env9: a\n\
         \x20   answer: \"yes\"\n    wildcard: \"*.example.com\"\n\
         \x20   banner: Deployments of this instance are announced in the platform channel; questions go to the on-call engineer\n\
         \x20 subscriptions:\n  - recipients:\n    - slack:platform\n    triggers:\n    - on-sync-succeeded\n\
         configs:\n  cmp:\n    create: true\n    plugins:\n      subst:\n        generate:\n\
         \x20         command: [sh, -c]\n          args: [\"envsubst \\nprint\"]\n",
    );
    let cm = data(&ms, "argocd-notifications-cm");
    assert_eq!(
        cm["context"],
        "argocdUrl: https://cd.example.org\n\
         answer: \"yes\"\n\
         banner: Deployments of this instance are announced in the platform channel; questions\n\
         \x20 go to the on-call engineer\n\
         env9: a\n\
         env10: b\n\
         region: us-east-1\n\
         wildcard: '*.example.com'\n"
    );
    assert_eq!(
        cm["subscriptions"],
        "- recipients:\n  - slack:platform\n  triggers:\n  - on-sync-succeeded\n"
    );
    assert_eq!(
        data(&ms, "argocd-cmp-cm")["subst.yaml"],
        "apiVersion: argoproj.io/v1alpha1\nkind: ConfigManagementPlugin\nmetadata:\n  name: subst\nspec:\n\
         \x20 generate:\n    args:\n    - \"envsubst \\nprint\"\n    command:\n    - sh\n    - -c\n"
    );
}

#[test]
fn ingress_hostname_overrides_domain_and_secure_backend_uses_443() {
    let ms = render("server:\n  ingress:\n    enabled: true\n    hostname: ui.example.net\n");
    let ing = find(&ms, "Ingress", "argocd-server");
    assert_eq!(ing["spec"]["rules"][0]["host"], "ui.example.net");
    assert_eq!(
        ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["port"]["number"],
        443
    );
    assert!(ing["spec"].get("tls").is_none());
    assert!(ing["spec"].get("ingressClassName").is_none());
}

#[test]
fn node_port_service() {
    let ms = render("server:\n  service:\n    type: NodePort\n    nodePortHttp: 31080\n");
    let svc = find(&ms, "Service", "argocd-server");
    assert_eq!(svc["spec"]["type"], "NodePort");
    assert_eq!(svc["spec"]["externalTrafficPolicy"], "Cluster");
    assert_eq!(svc["spec"]["ports"][0]["nodePort"], 31080);
    assert_eq!(svc["spec"]["ports"][1]["nodePort"], 30443);
}

// ---- images, args, env, resources --------------------------------------------

#[test]
fn global_and_component_images() {
    let ms = render(
        "global:\n  image:\n    repository: registry.example/argocd\n    tag: v9.9.9\n    imagePullPolicy: Always\n\
         repoServer:\n  image:\n    repository: registry.example/repo\n    tag: custom\n    imagePullPolicy: Never\n\
         dex:\n  image:\n    tag: v2.99.0\nredis:\n  image:\n    tag: 9-alpine\n",
    );
    let server = container(find(&ms, "Deployment", "argocd-server"), "server");
    assert_eq!(server["image"], "registry.example/argocd:v9.9.9");
    assert_eq!(server["imagePullPolicy"], "Always");
    let repo = find(&ms, "Deployment", "argocd-repo-server");
    assert_eq!(
        container(repo, "repo-server")["image"],
        "registry.example/repo:custom"
    );
    assert_eq!(container(repo, "repo-server")["imagePullPolicy"], "Never");
    assert_eq!(
        repo["spec"]["template"]["spec"]["initContainers"][0]["image"],
        "registry.example/repo:custom"
    );
    let dex = find(&ms, "Deployment", "argocd-dex-server");
    assert_eq!(
        container(dex, "dex-server")["image"],
        "ghcr.io/dexidp/dex:v2.99.0"
    );
    // Dex's init container copies the argocd binary: the global Argo CD image.
    assert_eq!(
        dex["spec"]["template"]["spec"]["initContainers"][0]["image"],
        "registry.example/argocd:v9.9.9"
    );
    let redis = container(find(&ms, "Deployment", "argocd-redis"), "redis");
    assert_eq!(
        redis["image"],
        "ecr-public.aws.com/docker/library/redis:9-alpine"
    );
    // The version label follows the Argo CD image tag.
    assert_eq!(
        find(&ms, "Deployment", "argocd-server")["metadata"]["labels"]["app.kubernetes.io/version"],
        "v9.9.9"
    );
}

#[test]
fn extra_args_env_and_resources_per_component() {
    let ms = render(
        "global:\n  env:\n  - {name: GLOBAL_ONE, value: g}\n\
         controller:\n  extraArgs: [--foo]\n  env:\n  - {name: CTRL_ENV, value: c}\n  resources:\n    limits: {cpu: \"2\", memory: 2Gi}\n\
         server:\n  extraArgs: [--insecure-x]\n  env:\n  - {name: SRV_ENV, value: s}\n\
         repoServer:\n  extraArgs: [--repo-x]\n  env:\n  - {name: REPO_ENV, value: r}\n\
         applicationSet:\n  extraArgs: [--as-x]\n  extraEnv:\n  - {name: AS_ENV, value: a}\n\
         notifications:\n  extraArgs: [--n-x]\n  extraEnv:\n  - {name: N_ENV, value: n}\n\
         dex:\n  extraArgs: [--dex-x]\n  env:\n  - {name: DEX_ENV, value: d}\n\
         redis:\n  extraArgs: [--maxmemory, 64mb]\n  env:\n  - {name: REDIS_ENV, value: x}\n",
    );
    let ctrl = container(
        find(&ms, "StatefulSet", "argocd-application-controller"),
        "application-controller",
    );
    assert_eq!(args(ctrl).last().unwrap(), "--foo");
    let names = env_names(ctrl);
    // The controller appends user variables after its own.
    assert_eq!(
        &names[names.len() - 3..],
        ["KUBECACHEDIR", "GLOBAL_ONE", "CTRL_ENV"]
    );
    assert_eq!(ctrl["resources"]["limits"]["memory"], "2Gi");

    let server = container(find(&ms, "Deployment", "argocd-server"), "server");
    assert_eq!(args(server).last().unwrap(), "--insecure-x");
    // The server, repo server, ApplicationSet controller and Dex put them first.
    assert_eq!(
        &env_names(server)[..3],
        ["GLOBAL_ONE", "SRV_ENV", "ARGOCD_SERVER_NAME"]
    );
    let repo = container(find(&ms, "Deployment", "argocd-repo-server"), "repo-server");
    assert_eq!(args(repo).last().unwrap(), "--repo-x");
    assert_eq!(
        &env_names(repo)[..3],
        ["GLOBAL_ONE", "REPO_ENV", "ARGOCD_REPO_SERVER_NAME"]
    );
    let appset = container(
        find(&ms, "Deployment", "argocd-applicationset-controller"),
        "applicationset-controller",
    );
    assert_eq!(args(appset).last().unwrap(), "--as-x");
    assert_eq!(
        &env_names(appset)[..3],
        ["GLOBAL_ONE", "AS_ENV", "NAMESPACE"]
    );
    let notif = container(
        find(&ms, "Deployment", "argocd-notifications-controller"),
        "notifications-controller",
    );
    assert_eq!(args(notif).last().unwrap(), "--n-x");
    assert_eq!(&env_names(notif)[..2], ["GLOBAL_ONE", "N_ENV"]);
    let dex = container(find(&ms, "Deployment", "argocd-dex-server"), "dex-server");
    assert_eq!(args(dex), ["rundex", "--dex-x"]);
    assert_eq!(&env_names(dex)[..2], ["GLOBAL_ONE", "DEX_ENV"]);
    // Redis: user flags come before the built-in ones, variables after REDIS_PASSWORD.
    let redis = container(find(&ms, "Deployment", "argocd-redis"), "redis");
    assert_eq!(&args(redis)[..2], ["--maxmemory", "64mb"]);
    assert_eq!(
        env_names(redis),
        ["REDIS_PASSWORD", "GLOBAL_ONE", "REDIS_ENV"]
    );
}

// ---- scheduling --------------------------------------------------------------

fn pod_spec<'a>(ms: &'a [RenderedManifest], kind: &str, name: &str) -> &'a Value {
    &find(ms, kind, name)["spec"]["template"]["spec"]
}

#[test]
fn node_selector_and_tolerations_global_vs_component() {
    let ms = render(
        "global:\n  nodeSelector: {pool: system}\n  tolerations:\n  - {key: dedicated, operator: Exists}\n\
         repoServer:\n  nodeSelector: {pool: builds}\n  tolerations:\n  - {key: builds, operator: Exists, effect: NoSchedule}\n",
    );
    for (kind, name, _) in WORKLOADS {
        let spec = pod_spec(&ms, kind, name);
        if *name == "argocd-repo-server" {
            assert_eq!(spec["nodeSelector"], serde_json::json!({"pool": "builds"}));
            assert_eq!(spec["tolerations"][0]["key"], "builds");
        } else {
            // Maps merge with the chart defaults (as in Helm), so the default
            // OS selector stays unless it is nulled out.
            assert_eq!(
                spec["nodeSelector"],
                serde_json::json!({"pool": "system", "kubernetes.io/os": "linux"}),
                "{name}"
            );
            assert_eq!(spec["tolerations"][0]["key"], "dedicated", "{name}");
        }
    }
}

#[test]
fn default_node_selector_and_soft_anti_affinity() {
    let ms = render("");
    for (kind, name, _) in WORKLOADS {
        let spec = pod_spec(&ms, kind, name);
        assert_eq!(
            spec["nodeSelector"],
            serde_json::json!({"kubernetes.io/os": "linux"}),
            "{name}"
        );
        assert!(spec.get("tolerations").is_none(), "{name}");
        let term = &spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
            [0];
        assert_eq!(
            term["podAffinityTerm"]["labelSelector"]["matchLabels"]["app.kubernetes.io/name"],
            *name
        );
        assert_eq!(
            term["podAffinityTerm"]["topologyKey"],
            "kubernetes.io/hostname"
        );
    }
}

#[test]
fn affinity_presets_and_component_override() {
    let ms = render(
        "global:\n  affinity:\n    podAntiAffinity: hard\n    nodeAffinity:\n      type: soft\n      matchExpressions:\n      - {key: zone, operator: In, values: [a]}\n\
         server:\n  affinity:\n    nodeAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n        nodeSelectorTerms:\n        - matchExpressions:\n          - {key: role, operator: In, values: [web]}\n",
    );
    let ctrl = &pod_spec(&ms, "StatefulSet", "argocd-application-controller")["affinity"];
    let required = &ctrl["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0];
    assert_eq!(required["topologyKey"], "kubernetes.io/hostname");
    assert_eq!(
        ctrl["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
            ["topologyKey"],
        "topology.kubernetes.io/zone"
    );
    let pref = &ctrl["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0];
    assert_eq!(pref["weight"], 1);
    assert_eq!(pref["preference"]["matchExpressions"][0]["key"], "zone");
    // A component's own affinity replaces the preset completely.
    let server = &pod_spec(&ms, "Deployment", "argocd-server")["affinity"];
    assert!(server.get("podAntiAffinity").is_none());
    assert_eq!(
        server["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
            [0]["matchExpressions"][0]["key"],
        "role"
    );
}

#[test]
fn anti_affinity_none_and_empty_node_selector_drop_the_fields() {
    // `null` deletes a default (an empty map would merge into it).
    let ms = render("global:\n  affinity:\n    podAntiAffinity: none\n  nodeSelector: null\n");
    let spec = pod_spec(&ms, "Deployment", "argocd-server");
    assert!(spec.get("affinity").is_none());
    assert!(spec.get("nodeSelector").is_none());
}

#[test]
fn topology_spread_constraints_get_a_default_selector() {
    let ms = render(
        "server:\n  topologySpreadConstraints:\n  - {maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: DoNotSchedule}\n",
    );
    let tsc = &pod_spec(&ms, "Deployment", "argocd-server")["topologySpreadConstraints"][0];
    assert_eq!(tsc["maxSkew"], 1);
    assert_eq!(
        tsc["labelSelector"]["matchLabels"]["app.kubernetes.io/name"],
        "argocd-server"
    );
    assert_eq!(
        tsc["labelSelector"]["matchLabels"]["app.kubernetes.io/instance"],
        "argocd"
    );
}

// ---- global metadata ---------------------------------------------------------

#[test]
fn additional_labels_and_pod_metadata() {
    let ms = render(
        "global:\n  additionalLabels: {team: platform}\n  podAnnotations: {a.example/p: \"1\"}\n  deploymentAnnotations: {a.example/d: x}\n\
         server:\n  podLabels: {tier: web}\n",
    );
    for m in ms.iter().filter(|m| m.kind != "CustomResourceDefinition") {
        assert_eq!(
            m.object["metadata"]["labels"]["team"], "platform",
            "{} {}",
            m.kind, m.name
        );
    }
    let server = find(&ms, "Deployment", "argocd-server");
    assert_eq!(server["metadata"]["annotations"]["a.example/d"], "x");
    assert_eq!(
        server["spec"]["template"]["metadata"]["annotations"]["a.example/p"],
        "1"
    );
    assert_eq!(
        server["spec"]["template"]["metadata"]["labels"]["tier"],
        "web"
    );
    // Selectors never pick up the extra labels (they are immutable).
    assert_eq!(
        server["spec"]["selector"]["matchLabels"],
        serde_json::json!({"app.kubernetes.io/name": "argocd-server", "app.kubernetes.io/instance": "argocd"})
    );
}

#[test]
fn release_and_namespace_are_honoured() {
    let opts = options("").with_values(Values::new());
    let opts = RenderOptions {
        release_name: "cd".into(),
        namespace: "gitops".into(),
        ..opts
    };
    let ms = chart().render(&opts).expect("render");
    // Release "cd" does not contain "argocd": names get the "cd-argocd" prefix.
    assert!(has(&ms, "Deployment", "cd-argocd-server"));
    let server = find(&ms, "Deployment", "cd-argocd-server");
    assert_eq!(server["metadata"]["namespace"], "gitops");
    assert_eq!(
        data(&ms, "argocd-cmd-params-cm")["repo.server"],
        "cd-argocd-repo-server:8081"
    );
    let crb = find(&ms, "ClusterRoleBinding", "cd-argocd-server");
    assert_eq!(crb["subjects"][0]["namespace"], "gitops");
}

// ---- configs -----------------------------------------------------------------

#[test]
fn config_maps_from_configs() {
    let ms = render(
        "configs:\n  cm:\n    statusbadge.enabled: true\n    exec.enabled: true\n    timeout.reconciliation: \"\"\n    dex.config: |\n      connectors: []\n\
         \x20 params:\n    server.insecure: true\n    controller.status.processors: 50\n\
         \x20 rbac:\n    policy.csv: |\n      g, admins, role:admin\n\
         \x20 ssh:\n    extraHosts: git.example.com ssh-ed25519 AAAAexample\n\
         \x20 tls:\n    certificates:\n      git.example.com: |\n        -----BEGIN CERTIFICATE-----\n        abc\n        -----END CERTIFICATE-----\n\
         \x20 gpg:\n    keys:\n      4AEE18F83AFDEB23: |\n        -----BEGIN PGP PUBLIC KEY BLOCK-----\n",
    );
    let cm = data(&ms, "argocd-cm");
    assert_eq!(cm["statusbadge.url"], "https://argocd.example.com/");
    assert_eq!(cm["exec.enabled"], "true");
    assert_eq!(cm["dex.config"], "connectors: []\n");
    // Empty entries are left out of argocd-cm.
    assert!(cm.get("timeout.reconciliation").is_none());
    let params = data(&ms, "argocd-cmd-params-cm");
    assert_eq!(params["server.insecure"], "true");
    assert_eq!(params["controller.status.processors"], "50");
    assert_eq!(
        data(&ms, "argocd-rbac-cm")["policy.csv"],
        "g, admins, role:admin\n"
    );
    let known = data(&ms, "argocd-ssh-known-hosts-cm")["ssh_known_hosts"]
        .as_str()
        .unwrap();
    assert!(known.starts_with("[ssh.github.com]:443 "));
    assert!(
        known.ends_with("\ngit.example.com ssh-ed25519 AAAAexample\n"),
        "{known}"
    );
    assert!(
        data(&ms, "argocd-tls-certs-cm")["git.example.com"]
            .as_str()
            .unwrap()
            .contains("abc\n")
    );
    assert!(
        data(&ms, "argocd-gpg-keys-cm")["4AEE18F83AFDEB23"]
            .as_str()
            .unwrap()
            .starts_with("-----BEGIN PGP")
    );
    // exec.enabled grants the server the web terminal.
    let rules = find(&ms, "ClusterRole", "argocd-server")["rules"]
        .as_array()
        .unwrap()
        .clone();
    assert!(
        rules
            .iter()
            .any(|r| r["resources"] == serde_json::json!(["pods/exec"]))
    );
    // dex.config makes the Dex pod restart on argocd-cm changes.
    let dex = find(&ms, "Deployment", "argocd-dex-server");
    assert!(
        dex["spec"]["template"]["metadata"]["annotations"]
            .get("checksum/cm")
            .is_some()
    );
}

#[test]
fn repositories_credential_templates_and_webhook_secrets() {
    let ms = render(
        "configs:\n  repositories:\n    infra:\n      url: git@github.com:example/infra.git\n      sshPrivateKey: KEY\n\
         \x20 credentialTemplates:\n    github:\n      url: https://github.com/example\n      password: tok\n      enableOCI: true\n\
         \x20 secret:\n    githubSecret: gh-hook\n    extra:\n      oidc.auth0.clientSecret: s3\n",
    );
    let repo = find(&ms, "Secret", "argocd-repo-infra");
    assert_eq!(
        repo["metadata"]["labels"]["argocd.argoproj.io/secret-type"],
        "repository"
    );
    assert_eq!(repo["data"]["url"], b64("git@github.com:example/infra.git"));
    assert_eq!(repo["data"]["sshPrivateKey"], b64("KEY"));
    let creds = find(&ms, "Secret", "argocd-repo-creds-github");
    assert_eq!(
        creds["metadata"]["labels"]["argocd.argoproj.io/secret-type"],
        "repo-creds"
    );
    assert_eq!(creds["data"]["enableOCI"], b64("true"));
    let secret = find(&ms, "Secret", "argocd-secret");
    assert_eq!(secret["data"]["webhook.github.secret"], b64("gh-hook"));
    assert_eq!(secret["data"]["oidc.auth0.clientSecret"], b64("s3"));
}

#[test]
fn admin_password_needs_its_mtime() {
    let err = render_err("configs:\n  secret:\n    argocdServerAdminPassword: \"$2a$10$hash\"\n");
    let mut chain = err.to_string();
    let mut src = std::error::Error::source(&err);
    while let Some(e) = src {
        chain.push_str(&format!(" / {e}"));
        src = e.source();
    }
    assert!(chain.contains("argocdServerAdminPasswordMtime"), "{chain}");
    // The caller may pass the time as an input instead.
    let opts = options("configs:\n  secret:\n    argocdServerAdminPassword: \"$2a$10$hash\"\n")
        .with_input(
            "admin_password_mtime",
            Secret::new("2026-02-02T00:00:00Z".to_string()),
        );
    let ms = chart().render(&opts).expect("render with the mtime input");
    let secret = find(&ms, "Secret", "argocd-secret");
    assert_eq!(
        secret["data"]["admin.passwordMtime"],
        b64("2026-02-02T00:00:00Z")
    );
    assert_eq!(secret["data"]["admin.password"], b64("$2a$10$hash"));
}

#[test]
fn config_objects_can_be_left_to_someone_else() {
    let ms = render(
        "configs:\n  cm:\n    create: false\n  params:\n    create: false\n  rbac:\n    create: false\n  ssh:\n    create: false\n  tls:\n    create: false\n  secret:\n    createSecret: false\n",
    );
    for name in [
        "argocd-cm",
        "argocd-cmd-params-cm",
        "argocd-rbac-cm",
        "argocd-ssh-known-hosts-cm",
        "argocd-tls-certs-cm",
    ] {
        assert!(!has(&ms, "ConfigMap", name), "{name}");
    }
    assert!(!has(&ms, "Secret", "argocd-secret"));
    // Without argocd-cm the pods carry no checksum of it.
    let server = find(&ms, "Deployment", "argocd-server");
    assert!(
        server["spec"]["template"]["metadata"]["annotations"]
            .get("checksum/cm")
            .is_none()
    );
}

#[test]
fn network_policies_follow_the_global_switch() {
    let ms = render(
        "global:\n  networkPolicy:\n    create: false\nserver:\n  networkPolicy:\n    create: true\n",
    );
    let nps: Vec<&str> = ms
        .iter()
        .filter(|m| m.kind == "NetworkPolicy")
        .map(|m| m.name.as_str())
        .collect();
    assert_eq!(nps, ["argocd-server"]);
}

#[test]
fn pdbs_styles_dual_stack_extra_objects_and_sidecars() {
    let ms = render(
        "global:\n  dualStack:\n    ipFamilyPolicy: PreferDualStack\n    ipFamilies: [IPv4, IPv6]\n\
         configs:\n  styles: |\n    .sidebar { color: red; }\n\
         extraObjects:\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: extra-one}, data: {a: \"1\"}}\n\
         - |\n  apiVersion: v1\n  kind: ConfigMap\n  metadata:\n    name: extra-two\n\
         server:\n  pdb: {enabled: true, maxUnavailable: 1}\n  extraContainers: [{name: sidecar, image: busybox}]\n  initContainers: [{name: init, image: busybox}]\n\
         repoServer:\n  pdb: {enabled: true}\n  initContainers: [{name: tool, image: alpine}]\n  extraContainers: [{name: cmp, image: plugin}]\n\
         dex:\n  enabled: false\n  pdb: {enabled: true}\n",
    );
    assert_eq!(
        data(&ms, "argocd-styles-cm")["custom.styles.css"],
        ".sidebar { color: red; }\n"
    );
    assert_eq!(
        data(&ms, "argocd-cm")["ui.cssurl"],
        "./custom/custom.styles.css"
    );
    assert_eq!(data(&ms, "extra-one")["a"], "1");
    assert!(has(&ms, "ConfigMap", "extra-two"));
    assert_eq!(
        find(&ms, "PodDisruptionBudget", "argocd-server")["spec"]["maxUnavailable"],
        1
    );
    assert_eq!(
        find(&ms, "PodDisruptionBudget", "argocd-repo-server")["spec"]["minAvailable"],
        0
    );
    // A disabled component gets no budget.
    assert!(!has(&ms, "PodDisruptionBudget", "argocd-dex-server"));
    let names = |spec: &Value, key: &str| -> Vec<String> {
        spec[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect()
    };
    let server = pod_spec(&ms, "Deployment", "argocd-server");
    assert_eq!(names(server, "containers"), ["server", "sidecar"]);
    assert_eq!(names(server, "initContainers"), ["init"]);
    let repo = pod_spec(&ms, "Deployment", "argocd-repo-server");
    assert_eq!(names(repo, "containers"), ["repo-server", "cmp"]);
    assert_eq!(names(repo, "initContainers"), ["copyutil", "tool"]);
    for svc in [
        "argocd-server",
        "argocd-repo-server",
        "argocd-applicationset-controller",
        "argocd-redis",
    ] {
        let spec = &find(&ms, "Service", svc)["spec"];
        assert_eq!(spec["ipFamilyPolicy"], "PreferDualStack", "{svc}");
        assert_eq!(
            spec["ipFamilies"],
            serde_json::json!(["IPv4", "IPv6"]),
            "{svc}"
        );
    }
}

#[test]
fn notifications_rbac_for_application_namespaces() {
    let ms = render(
        "configs:\n  params:\n    application.namespaces: team-*\n\
         notifications:\n  clusterRoleRules:\n    rules:\n    - {apiGroups: [\"\"], resources: [namespaces], verbs: [get]}\n",
    );
    let cluster = find(&ms, "ClusterRole", "argocd-notifications-controller")["rules"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(cluster[0]["resources"], serde_json::json!(["namespaces"]));
    assert_eq!(
        cluster[2]["verbs"],
        serde_json::json!(["list", "watch", "create"])
    );
    // The namespaced Role is not widened.
    let role = find(&ms, "Role", "argocd-notifications-controller")["rules"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(role[1]["verbs"], serde_json::json!(["list", "watch"]));
    // The server may manage Applications in those namespaces.
    let server = find(&ms, "ClusterRole", "argocd-server")["rules"]
        .as_array()
        .unwrap()
        .clone();
    assert!(
        server
            .iter()
            .any(|r| r["resources"] == serde_json::json!(["applications"])
                && r["verbs"] == serde_json::json!(["create", "delete", "update", "patch"]))
    );
}

#[test]
fn tendril_render_cli_prints_the_same_rendering() {
    let values = manifest_dir().join("fixtures/argocd-values/private-repo.yaml");
    let out = Command::new(env!("CARGO_BIN_EXE_tendril"))
        .args(["render", "--redis-password", REDIS_PASSWORD, "-f"])
        .arg(&values)
        .output()
        .expect("run tendril render");
    assert!(
        out.status.success(),
        "tendril render failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli = String::from_utf8(out.stdout).expect("UTF-8 output");
    assert_eq!(cli, manifests_to_yaml(&render(&fixture("private-repo"))));
}

#[test]
fn cluster_roles_can_be_left_out_and_aggregate_roles_added() {
    let ms = render("createClusterRoles: false\ncreateAggregateRoles: true\n");
    assert!(!ms.iter().any(|m| m.kind == "ClusterRoleBinding"));
    let roles: Vec<&str> = ms
        .iter()
        .filter(|m| m.kind == "ClusterRole")
        .map(|m| m.name.as_str())
        .collect();
    assert_eq!(
        roles,
        [
            "argocd-aggregate-to-view",
            "argocd-aggregate-to-edit",
            "argocd-aggregate-to-admin"
        ]
    );
    let view = find(&ms, "ClusterRole", "argocd-aggregate-to-view");
    assert_eq!(
        view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"],
        "true"
    );
    assert_eq!(
        view["rules"][0]["verbs"],
        serde_json::json!(["get", "list", "watch"])
    );
    // The namespaced Roles stay.
    assert!(has(&ms, "Role", "argocd-server"));
}

#[test]
fn external_redis_credentials_go_to_argocd_redis() {
    let ms = render(
        "redis:\n  enabled: false\nexternalRedis:\n  host: redis.example.com\n  username: cd\n  password: pw\n",
    );
    let secret = find(&ms, "Secret", "argocd-redis");
    assert_eq!(secret["data"]["redis-username"], b64("cd"));
    assert_eq!(secret["data"]["redis-password"], b64("pw"));
    assert!(secret["data"].get("auth").is_none());
    let repo = container(find(&ms, "Deployment", "argocd-repo-server"), "repo-server");
    let env = repo["env"].as_array().unwrap();
    for (var, key) in [
        ("REDIS_USERNAME", "redis-username"),
        ("REDIS_PASSWORD", "redis-password"),
    ] {
        let r = &env.iter().find(|e| e["name"] == var).unwrap()["valueFrom"]["secretKeyRef"];
        assert_eq!(r["name"], "argocd-redis");
        assert_eq!(r["key"], key);
        assert_eq!(r["optional"], false, "{var}");
    }
}

#[test]
fn metrics_services_and_service_monitors() {
    let values = "controller:\n  metrics:\n    enabled: true\n    serviceMonitor: {enabled: true}\n\
                  server:\n  metrics: {enabled: true, serviceMonitor: {enabled: true, interval: 15s}}\n\
                  applicationSet:\n  metrics: {enabled: true}\n";
    // Without the Prometheus Operator API the ServiceMonitors are left out.
    let ms = render(values);
    assert!(has(&ms, "Service", "argocd-application-controller-metrics"));
    assert!(has(&ms, "Service", "argocd-server-metrics"));
    assert!(!ms.iter().any(|m| m.kind == "ServiceMonitor"));
    // ApplicationSet metrics open its NetworkPolicy for scraping.
    let np = find(&ms, "NetworkPolicy", "argocd-applicationset-controller");
    assert_eq!(np["spec"]["ingress"][0]["ports"][0]["port"], "metrics");
    let svc = find(&ms, "Service", "argocd-server-metrics");
    assert_eq!(svc["spec"]["ports"][0]["port"], 8083);
    assert_eq!(
        svc["metadata"]["labels"]["app.kubernetes.io/name"],
        "argocd-server-metrics"
    );

    let mut caps = tendril::chart::Capabilities::default();
    caps.api_versions
        .push("monitoring.coreos.com/v1".to_string());
    let ms = chart()
        .render(&options(values).with_capabilities(caps))
        .expect("render");
    let sm = find(&ms, "ServiceMonitor", "argocd-server");
    assert_eq!(sm["spec"]["endpoints"][0]["interval"], "15s");
    // The monitor selects exactly the metrics Service's labels.
    let svc_labels = &find(&ms, "Service", "argocd-server-metrics")["metadata"]["labels"];
    for (k, v) in sm["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&svc_labels[k], v, "{k}");
    }
    assert!(has(&ms, "ServiceMonitor", "argocd-application-controller"));
}

// ---- keys found missing against the upstream templates ---------------------

/// `server.ingressGrpc`: upstream's second Ingress, host `grpc.` + the server
/// host, always to the HTTPS port, its own TLS Secret.
#[test]
fn grpc_ingress_follows_the_upstream_template() {
    let ms = render(&fixture("combined-grpc-exec"));
    let grpc = find(&ms, "Ingress", "argocd-server-grpc");
    let spec = &grpc["spec"];
    assert_eq!(spec["ingressClassName"], "nginx");
    assert_eq!(
        grpc["metadata"]["annotations"]["nginx.ingress.kubernetes.io/backend-protocol"],
        "GRPC"
    );
    let backend =
        serde_json::json!({"service": {"name": "argocd-server", "port": {"number": 443}}});
    assert_eq!(
        spec["rules"],
        serde_json::json!([
            {"host": "grpc.cd.example.org", "http": {"paths": [
                {"path": "/", "pathType": "Prefix", "backend": backend}]}},
            {"host": "grpc-alt.example.org", "http": {"paths": [
                {"path": "/api", "pathType": "Prefix", "backend": backend}]}},
        ])
    );
    assert_eq!(
        spec["tls"],
        serde_json::json!([{"hosts": ["grpc.cd.example.org"], "secretName": "argocd-server-grpc-tls"}])
    );
    // The main Ingress still goes to port 80 (server.insecure).
    let main = find(&ms, "Ingress", "argocd-server");
    assert_eq!(
        main["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["port"]["number"],
        80
    );
    // An explicit hostname wins over the derived one.
    let ms = render("server:\n  ingressGrpc:\n    enabled: true\n    hostname: cli.example.org\n");
    assert_eq!(
        find(&ms, "Ingress", "argocd-server-grpc")["spec"]["rules"][0]["host"],
        "cli.example.org"
    );
    assert!(!has(&render(""), "Ingress", "argocd-server-grpc"));
}

/// `configs.cm."exec.enabled"` grants `pods/exec create` in the server's
/// Role as well as in its ClusterRole, as both upstream templates do.
#[test]
fn exec_enabled_reaches_the_server_role_and_cluster_role() {
    let exec_rule =
        serde_json::json!({"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create"]});
    let rules = |ms: &[RenderedManifest], kind: &str| -> Vec<Value> {
        find(ms, kind, "argocd-server")["rules"]
            .as_array()
            .expect("rules")
            .clone()
    };
    for on in ["true", "\"true\""] {
        let ms = render(&format!("configs:\n  cm:\n    exec.enabled: {on}\n"));
        assert!(
            rules(&ms, "Role").contains(&exec_rule),
            "Role, exec.enabled: {on}"
        );
        assert!(
            rules(&ms, "ClusterRole").contains(&exec_rule),
            "ClusterRole, exec.enabled: {on}"
        );
    }
    let ms = render(&fixture("combined-external-redis-rbac"));
    assert!(!rules(&ms, "Role").contains(&exec_rule));
    assert!(!rules(&ms, "ClusterRole").contains(&exec_rule));
}

/// `configs.ssh.extraHosts` follows the default known hosts after the blank
/// line Helm's `nindent` of a text ending in a newline leaves, byte for byte.
#[test]
fn extra_known_hosts_follow_a_blank_line() {
    let known = |ms: &[RenderedManifest]| -> String {
        data(ms, "argocd-ssh-known-hosts-cm")["ssh_known_hosts"]
            .as_str()
            .expect("known hosts")
            .to_string()
    };
    let defaults = known(&render(""));
    assert!(defaults.ends_with('\n') && !defaults.ends_with("\n\n"));
    let extra = "git.example.org ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExampleExampleExampleExampleExampleExamp\n";
    assert_eq!(
        known(&render(&fixture("combined-grpc-exec"))),
        format!("{defaults}\n{extra}")
    );
    // A knownHosts text without a final newline leaves no blank line.
    let ms = render(
        "configs:\n  ssh:\n    knownHosts: \"a ssh-rsa AAA\"\n    extraHosts: \"b ssh-rsa BBB\"\n",
    );
    assert_eq!(known(&ms), "a ssh-rsa AAA\nb ssh-rsa BBB\n");
}

#[test]
fn default_deny_ingress_policy() {
    let ms = render(&fixture("combined-grpc-exec"));
    let deny = find(&ms, "NetworkPolicy", "argocd-default-deny");
    assert_eq!(
        deny["spec"],
        serde_json::json!({"podSelector": {}, "policyTypes": ["Ingress"]})
    );
    assert!(!has(&render(""), "NetworkPolicy", "argocd-default-deny"));
    let off = "global:\n  networkPolicy:\n    create: false\n    defaultDenyIngress: true\n";
    assert!(!has(&render(off), "NetworkPolicy", "argocd-default-deny"));
}

// ---- second audit against the upstream templates --------------------------

fn with_monitoring(values: &str) -> Vec<RenderedManifest> {
    let mut caps = tendril::chart::Capabilities::default();
    caps.api_versions
        .push("monitoring.coreos.com/v1".to_string());
    chart()
        .render(&options(values).with_capabilities(caps))
        .expect("render")
}

fn pod_annotations<'a>(ms: &'a [RenderedManifest], name: &str) -> &'a Value {
    &find(ms, "Deployment", name)["spec"]["template"]["metadata"]["annotations"]
}

/// `<component>.certificateSecret.enabled` switched only the strict-TLS
/// parameter: upstream also renders the Secret from the values (its own
/// template, type kubernetes.io/tls, `ca.crt` only when given) and, for the
/// repo server and Dex, a checksum of it on the pods.
#[test]
fn tls_secrets_from_values_reach_every_template_that_reads_them() {
    let ms = render(&fixture("combined-tls-dex-metrics"));
    let keys = |name: &str| -> Vec<String> {
        let s = find(&ms, "Secret", name);
        assert_eq!(s["type"], "kubernetes.io/tls", "{name}");
        let mut k: Vec<String> = s["data"]
            .as_object()
            .expect("data")
            .keys()
            .cloned()
            .collect();
        k.sort();
        k
    };
    assert_eq!(keys("argocd-server-tls"), ["tls.crt", "tls.key"]);
    assert_eq!(
        keys("argocd-repo-server-tls"),
        ["ca.crt", "tls.crt", "tls.key"]
    );
    assert_eq!(keys("argocd-dex-server-tls"), ["tls.crt", "tls.key"]);
    let server = find(&ms, "Secret", "argocd-server-tls");
    assert_eq!(
        server["data"]["tls.key"],
        b64("-----BEGIN PRIVATE KEY-----\nc2VydmVyLWtleQ==\n-----END PRIVATE KEY-----\n")
    );
    let labels = &server["metadata"]["labels"];
    assert_eq!(labels["app.kubernetes.io/name"], "argocd-server-tls");
    assert_eq!(labels["app.kubernetes.io/component"], "server");
    assert_eq!(labels["tls-source"], "values");
    let repo = find(&ms, "Secret", "argocd-repo-server-tls");
    assert_eq!(repo["metadata"]["annotations"]["rotated-by"], "platform");
    assert_eq!(
        repo["metadata"]["labels"]["app.kubernetes.io/component"],
        "repo-server"
    );
    assert_eq!(
        find(&ms, "Secret", "argocd-dex-server-tls")["metadata"]["labels"]["app.kubernetes.io/name"],
        "argocd-dex-server-tls"
    );
    assert!(pod_annotations(&ms, "argocd-repo-server")["checksum/repo-server-tls"].is_string());
    assert!(pod_annotations(&ms, "argocd-dex-server")["checksum/dex-server-tls"].is_string());
    let params = data(&ms, "argocd-cmd-params-cm");
    assert_eq!(params["server.repo.server.strict.tls"], "true");
    assert_eq!(params["server.dex.server.strict.tls"], "true");

    // Off by default; Dex's only with Dex.
    let ms = render("");
    for name in [
        "argocd-server-tls",
        "argocd-repo-server-tls",
        "argocd-dex-server-tls",
    ] {
        assert!(!has(&ms, "Secret", name), "{name}");
    }
    assert!(pod_annotations(&ms, "argocd-repo-server")["checksum/repo-server-tls"].is_null());
    let ms = render("dex:\n  enabled: false\n  certificateSecret: {enabled: true}\n");
    assert!(!has(&ms, "Secret", "argocd-dex-server-tls"));
}

/// `dex.metrics` and `dex.servicePortMetrics`: the metrics port on the Dex
/// Service, whose labels and annotations come from `dex.metrics.service`,
/// and a ServiceMonitor selecting the Dex Service; `dex.logLevel` and
/// `dex.logFormat` (commented keys upstream) are flags of the wrapper.
#[test]
fn dex_metrics_and_log_flags() {
    let ms = render(&fixture("combined-tls-dex-metrics"));
    let svc = find(&ms, "Service", "argocd-dex-server");
    assert_eq!(
        svc["spec"]["ports"][2],
        serde_json::json!({"name": "http-metrics", "protocol": "TCP", "port": 5558, "targetPort": "metrics"})
    );
    assert_eq!(svc["metadata"]["labels"]["scrape"], "dex");
    assert_eq!(
        svc["metadata"]["annotations"]["example.org/team"],
        "identity"
    );
    let dex = container(find(&ms, "Deployment", "argocd-dex-server"), "dex-server");
    assert_eq!(
        dex["command"],
        serde_json::json!(["/shared/argocd-dex", "--loglevel=debug", "--logformat=json"])
    );
    assert_eq!(
        find(&render(""), "Service", "argocd-dex-server")["spec"]["ports"]
            .as_array()
            .expect("ports")
            .len(),
        2
    );

    let ms = with_monitoring(
        "dex:\n  metrics:\n    enabled: true\n    serviceMonitor: {enabled: true}\n",
    );
    let sm = find(&ms, "ServiceMonitor", "argocd-dex-server");
    assert_eq!(
        sm["spec"]["selector"]["matchLabels"],
        serde_json::json!({"app.kubernetes.io/name": "argocd-dex-server",
            "app.kubernetes.io/instance": "argocd", "app.kubernetes.io/component": "dex-server"})
    );
    assert_eq!(
        sm["spec"]["endpoints"],
        serde_json::json!([{"port": "http-metrics", "path": "/metrics", "interval": "30s", "honorLabels": false}])
    );
    assert_eq!(
        sm["spec"]["namespaceSelector"]["matchNames"],
        serde_json::json!(["argocd"])
    );
}

/// The startup probes upstream has for the ApplicationSet and notifications
/// controllers (TCP) and Dex (HTTP).
#[test]
fn startup_probes_of_applicationset_notifications_and_dex() {
    let ms = render(&fixture("combined-tls-dex-metrics"));
    let probe = |kind: &str, name: &str, c: &str| {
        container(find(&ms, kind, name), c)["startupProbe"].clone()
    };
    let timing = |failures: u64| {
        serde_json::json!({"initialDelaySeconds": 10, "periodSeconds": 10, "timeoutSeconds": 1,
            "successThreshold": 1, "failureThreshold": failures})
    };
    let mut expected = timing(30);
    expected["tcpSocket"] = serde_json::json!({"port": "probe"});
    assert_eq!(
        probe(
            "Deployment",
            "argocd-applicationset-controller",
            "applicationset-controller"
        ),
        expected
    );
    let mut expected = timing(20);
    expected["tcpSocket"] = serde_json::json!({"port": "metrics"});
    assert_eq!(
        probe(
            "Deployment",
            "argocd-notifications-controller",
            "notifications-controller"
        ),
        expected
    );
    let mut expected = timing(20);
    expected["httpGet"] =
        serde_json::json!({"path": "/healthz/ready", "port": "metrics", "scheme": "HTTP"});
    assert_eq!(
        probe("Deployment", "argocd-dex-server", "dex-server"),
        expected
    );
    let ms = render("");
    assert!(
        container(find(&ms, "Deployment", "argocd-dex-server"), "dex-server")["startupProbe"]
            .is_null()
    );
}

/// `global.deploymentStrategy` and a component's own merge deeply, as
/// upstream's mergeOverwrite does (a shallow merge lost the global
/// rollingUpdate fields); Recreate drops rollingUpdate.
#[test]
fn deployment_strategies_merge_deeply() {
    let ms = render(&fixture("combined-tls-dex-metrics"));
    let strategy = |name: &str| find(&ms, "Deployment", name)["spec"]["strategy"].clone();
    assert_eq!(
        strategy("argocd-server"),
        serde_json::json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}})
    );
    assert_eq!(
        strategy("argocd-repo-server"),
        serde_json::json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}})
    );
    assert_eq!(
        strategy("argocd-dex-server"),
        serde_json::json!({"type": "Recreate"})
    );
    // notifications keeps its own default, Recreate.
    assert_eq!(
        strategy("argocd-notifications-controller"),
        serde_json::json!({"type": "Recreate"})
    );
}

/// Upstream selects the Redis pods by `app.kubernetes.io/name` alone, in its
/// disruption budget and in the default selector of a spread constraint
/// (the other components add `app.kubernetes.io/instance`).
#[test]
fn redis_is_selected_by_name_only() {
    let ms = render(&fixture("combined-redis-names"));
    let prefix = "platform-continuous-delivery-argocd-eu-west-1az";
    assert_eq!(
        find(&ms, "PodDisruptionBudget", &format!("{prefix}-redis"))["spec"],
        serde_json::json!({"maxUnavailable": 1,
            "selector": {"matchLabels": {"app.kubernetes.io/name": "argocd-redis"}}})
    );
    let spread = |kind: &str, name: &str| {
        find(&ms, kind, &format!("{prefix}-{name}"))["spec"]["template"]["spec"]
            ["topologySpreadConstraints"][0]["labelSelector"]
            .clone()
    };
    assert_eq!(
        spread("Deployment", "redis"),
        serde_json::json!({"matchLabels": {"app.kubernetes.io/name": "argocd-redis"}})
    );
    assert_eq!(
        spread("Deployment", "server"),
        serde_json::json!({"matchLabels": {"app.kubernetes.io/name": "argocd-server",
            "app.kubernetes.io/instance": "argocd"}})
    );
}

/// Object names are cut as upstream cuts them: 63 characters (52 for the
/// controller, whose StatefulSet adds a revision hash), without a trailing
/// `-`; the addresses in argocd-cmd-params-cm use the cut names.
#[test]
fn long_names_are_cut_like_upstream() {
    let ms = render(&fixture("combined-redis-names"));
    let prefix = "platform-continuous-delivery-argocd-eu-west-1az";
    assert!(has(&ms, "StatefulSet", &format!("{prefix}-appl")));
    assert!(has(&ms, "PodDisruptionBudget", &format!("{prefix}-appl")));
    // "-applicationset-controller" cut at 63 ends in "-", which goes.
    assert!(has(&ms, "Deployment", &format!("{prefix}-applicationset")));
    assert!(has(&ms, "Deployment", &format!("{prefix}-notifications-c")));
    assert!(has(
        &ms,
        "Service",
        &format!("{prefix}-notifications-c-metrics")
    ));
    let params = data(&ms, "argocd-cmd-params-cm");
    assert_eq!(params["repo.server"], format!("{prefix}-repo-server:8081"));
    assert_eq!(params["redis.server"], format!("{prefix}-redis:6379"));
    assert_eq!(
        params["server.dex.server"],
        format!("https://{prefix}-dex-server:5556")
    );
}

/// `server.service.externalIPs` is printed by upstream with Go's `%v`
/// (`[a b]`), which YAML reads as one entry holding every address.
#[test]
fn server_external_ips_print_as_upstream() {
    let ips = |values: &str| {
        find(&render(values), "Service", "argocd-server")["spec"]["externalIPs"].clone()
    };
    assert_eq!(
        ips("server:\n  service:\n    externalIPs: [203.0.113.10]\n"),
        serde_json::json!(["203.0.113.10"])
    );
    assert_eq!(
        ips("server:\n  service:\n    externalIPs: [10.0.0.1, 10.0.0.2]\n"),
        serde_json::json!(["10.0.0.1 10.0.0.2"])
    );
    assert!(ips("").is_null());
}

/// argocd-notifications-cm's `context` and `subscriptions` are texts that
/// upstream writes with Helm's toYaml (sorted keys, a list inside a mapping
/// not indented): compared byte for byte.
#[test]
fn notifications_context_and_subscriptions_text() {
    let ms = render(&fixture("combined-redis-names"));
    let cm = data(&ms, "argocd-notifications-cm");
    assert_eq!(
        cm["context"],
        "argocdUrl: https://argocd.example.com\nenvironmentName: production\nregion: eu-west-1\n"
    );
    assert_eq!(
        cm["subscriptions"],
        "- recipients:\n  - slack:deployments\n  triggers:\n  - on-sync-succeeded\n  - on-sync-failed\n"
    );
    assert_eq!(cm["service.slack"], "token: $slack-token\n");
}

/// ConfigMap values keep their exact text however the template writes them
/// out (the render reads its own output back): a lone newline, and a text
/// whose first line is empty and whose next is indented, are not turned
/// into a block scalar that reads back differently.
#[test]
fn config_map_texts_read_back_exactly() {
    let ms = render(
        "configs:\n  cm:\n    a.newline: \"\\n\"\n    b.indented: \"\\n  indented\\n\"\n    c.plain: \"x\\ny\\n\"\n",
    );
    let cm = data(&ms, "argocd-cm");
    assert_eq!(cm["a.newline"], "\n");
    assert_eq!(cm["b.indented"], "\n  indented\n");
    assert_eq!(cm["c.plain"], "x\ny\n");
}

/// Ported from upstream in this audit: HorizontalPodAutoscalers (the
/// Deployment then has no replicas), the repo server's existingVolumes and
/// trafficDistribution, and the ApplicationSet controller's cluster-wide
/// RBAC for ApplicationSets in any namespace.
#[test]
fn autoscalers_repo_volumes_and_applicationsets_in_any_namespace() {
    let ms = render(&fixture("combined-redis-names"));
    let prefix = "platform-continuous-delivery-argocd-eu-west-1az";
    let hpa = |name: &str| {
        find(&ms, "HorizontalPodAutoscaler", &format!("{prefix}-{name}"))["spec"].clone()
    };
    // An empty memory target leaves only the CPU one.
    assert_eq!(
        hpa("server"),
        serde_json::json!({"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                "name": format!("{prefix}-server")},
            "minReplicas": 1, "maxReplicas": 4,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 50}}}]})
    );
    let repo = hpa("repo-server");
    assert_eq!(
        repo["metrics"][0]["resource"]["target"]["averageUtilization"],
        70
    );
    assert_eq!(
        repo["behavior"]["scaleDown"]["stabilizationWindowSeconds"],
        300
    );
    for name in ["server", "repo-server"] {
        assert!(
            find(&ms, "Deployment", &format!("{prefix}-{name}"))["spec"]["replicas"].is_null(),
            "{name}"
        );
    }
    // Both targets by default, memory first.
    let ms_default = render("server:\n  autoscaling: {enabled: true}\n");
    let names: Vec<&str> =
        find(&ms_default, "HorizontalPodAutoscaler", "argocd-server")["spec"]["metrics"]
            .as_array()
            .expect("metrics")
            .iter()
            .map(|m| m["resource"]["name"].as_str().expect("name"))
            .collect();
    assert_eq!(names, ["memory", "cpu"]);
    assert!(!has(
        &render(""),
        "HorizontalPodAutoscaler",
        "argocd-server"
    ));

    let repo = find(&ms, "Deployment", &format!("{prefix}-repo-server"));
    let tmp = repo["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == "tmp")
        .expect("tmp volume");
    assert!(tmp["emptyDir"].is_null());
    assert_eq!(
        tmp["ephemeral"]["volumeClaimTemplate"]["spec"]["resources"]["requests"]["storage"],
        "5Gi"
    );
    assert_eq!(
        find(&ms, "Service", &format!("{prefix}-repo-server"))["spec"]["trafficDistribution"],
        "PreferClose"
    );

    let me = format!("{prefix}-applicationset");
    let role = find(&ms, "ClusterRole", &me);
    assert_eq!(role["rules"].as_array().expect("rules").len(), 7);
    let binding = find(&ms, "ClusterRoleBinding", &me);
    assert_eq!(
        binding["subjects"],
        serde_json::json!([{"kind": "ServiceAccount", "name": "argocd-applicationset-controller", "namespace": "argocd"}])
    );
    // Upstream does not tie these to createClusterRoles.
    let ms = render("createClusterRoles: false\napplicationSet:\n  allowAnyNamespace: true\n");
    assert!(has(&ms, "ClusterRole", "argocd-applicationset-controller"));
    assert!(!has(
        &render(""),
        "ClusterRole",
        "argocd-applicationset-controller"
    ));
}

/// `redis.exporter` and `redis.metrics`: the exporter sidecar (its port
/// opened in the Redis NetworkPolicy only with the exporter, as upstream), a
/// metrics Service without dual-stack settings, and a ServiceMonitor.
#[test]
fn redis_exporter_metrics_service_and_monitor() {
    let values = "redis:\n  exporter:\n    enabled: true\n    env: [{name: EXTRA, value: x}]\n    livenessProbe: {enabled: true}\n\
                  \x20 metrics:\n    enabled: true\n    serviceMonitor: {enabled: true}\n\
                  global:\n  env: [{name: GLOBAL, value: g}]\n";
    let ms = with_monitoring(values);
    let redis = find(&ms, "Deployment", "argocd-redis");
    let exporter = container(redis, "metrics");
    assert_eq!(
        exporter["image"],
        "ghcr.io/oliver006/redis_exporter:v1.86.0"
    );
    assert_eq!(
        env_names(exporter),
        [
            "REDIS_ADDR",
            "REDIS_EXPORTER_WEB_LISTEN_ADDRESS",
            "REDIS_PASSWORD",
            "GLOBAL",
            "EXTRA"
        ]
    );
    assert_eq!(exporter["env"][0]["value"], "redis://localhost:6379");
    assert_eq!(exporter["env"][1]["value"], "0.0.0.0:9121");
    assert_eq!(
        exporter["livenessProbe"],
        serde_json::json!({"httpGet": {"path": "/metrics", "port": 9121}, "initialDelaySeconds": 30,
            "timeoutSeconds": 15, "periodSeconds": 15, "successThreshold": 1, "failureThreshold": 5})
    );
    assert!(exporter["readinessProbe"].is_null());
    let np = find(&ms, "NetworkPolicy", "argocd-redis");
    assert_eq!(
        np["spec"]["ingress"][1],
        serde_json::json!({"from": [{"namespaceSelector": {}}], "ports": [{"port": "metrics", "protocol": "TCP"}]})
    );
    let svc = find(&ms, "Service", "argocd-redis-metrics");
    assert_eq!(
        svc["spec"],
        serde_json::json!({"type": "ClusterIP", "clusterIP": "None",
            "ports": [{"name": "http-metrics", "protocol": "TCP", "port": 9121, "targetPort": "metrics"}],
            "selector": {"app.kubernetes.io/name": "argocd-redis", "app.kubernetes.io/instance": "argocd",
                "app.kubernetes.io/component": "redis"}})
    );
    let sm = find(&ms, "ServiceMonitor", "argocd-redis");
    assert_eq!(sm["spec"]["endpoints"][0]["interval"], "30s");
    assert_eq!(
        sm["spec"]["selector"]["matchLabels"],
        svc["spec"]["selector"]
    );
    // Without the exporter: one container, no metrics rule.
    let ms = render("redis:\n  metrics: {enabled: true}\n");
    assert_eq!(
        find(&ms, "NetworkPolicy", "argocd-redis")["spec"]["ingress"]
            .as_array()
            .expect("ingress")
            .len(),
        1
    );
    assert_eq!(
        find(&ms, "Deployment", "argocd-redis")["spec"]["template"]["spec"]["containers"]
            .as_array()
            .expect("containers")
            .len(),
        1
    );
}

/// `applicationSet.ingress` and `.certificate`: the webhook Ingress to the
/// Service's port with the cert-manager Certificate for its Secret, and
/// the webhook port opened in the controller's NetworkPolicy, which upstream
/// renders for the Ingress even without metrics.
#[test]
fn applicationset_webhook_ingress_and_its_network_policy() {
    let ms = render(&fixture("combined-redis-names"));
    let me = "platform-continuous-delivery-argocd-eu-west-1az-applicationset";
    let ing = find(&ms, "Ingress", me);
    let backend = serde_json::json!({"service": {"name": me, "port": {"number": 7000}}});
    assert_eq!(
        ing["spec"],
        serde_json::json!({"ingressClassName": "nginx",
            "rules": [
                {"host": "hooks.example.org", "http": {"paths": [
                    {"path": "/api/webhook", "pathType": "Prefix", "backend": backend}]}},
                {"host": "hooks-alt.example.org", "http": {"paths": [
                    {"path": "/api/webhook", "pathType": "Prefix", "backend": backend}]}}],
            "tls": [{"hosts": ["hooks.example.org"], "secretName": "argocd-applicationset-controller-tls"}]})
    );
    assert_eq!(
        find(&ms, "NetworkPolicy", me)["spec"]["ingress"],
        serde_json::json!([{"ports": [{"port": "webhook"}]},
            {"from": [{"namespaceSelector": {}}], "ports": [{"port": "metrics"}]}])
    );
    let cert = find(&ms, "Certificate", me);
    assert_eq!(
        cert["spec"],
        serde_json::json!({"secretName": "argocd-applicationset-controller-tls",
            "commonName": "hooks.example.org", "dnsNames": ["hooks.example.org"],
            "issuerRef": {"kind": "ClusterIssuer", "name": "letsencrypt"},
            "privateKey": {"rotationPolicy": "Never", "encoding": "PKCS1", "algorithm": "RSA", "size": 2048}})
    );
    let ms = render("applicationSet:\n  ingress: {enabled: true}\n");
    assert_eq!(
        find(&ms, "Ingress", "argocd-applicationset-controller")["spec"]["rules"][0]["host"],
        "argocd.example.com"
    );
    assert!(has(
        &ms,
        "NetworkPolicy",
        "argocd-applicationset-controller"
    ));
    assert!(!has(
        &render(""),
        "NetworkPolicy",
        "argocd-applicationset-controller"
    ));
}

/// `server.extensions`: an installer init container per extension, after
/// the user's init containers, sharing the `extensions` volume the server
/// mounts.
#[test]
fn server_ui_extensions() {
    let ms = render(
        "server:\n  initContainers: [{name: first, image: busybox}]\n  extensions:\n    enabled: true\n    extensionList:\n\
         \x20     - name: extension-metrics\n        env: [{name: EXTENSION_URL, value: https://example.org/ext.tar}]\n",
    );
    let spec = &find(&ms, "Deployment", "argocd-server")["spec"]["template"]["spec"];
    let inits = spec["initContainers"].as_array().expect("init containers");
    assert_eq!(inits.len(), 2);
    assert_eq!(inits[0]["name"], "first");
    assert_eq!(
        inits[1],
        serde_json::json!({"name": "extension-metrics",
            "image": "quay.io/argoprojlabs/argocd-extension-installer:v1.0.1",
            "imagePullPolicy": "IfNotPresent", "resources": {},
            "securityContext": {"runAsNonRoot": true, "readOnlyRootFilesystem": true,
                "allowPrivilegeEscalation": false, "runAsUser": 1000,
                "seccompProfile": {"type": "RuntimeDefault"}, "capabilities": {"drop": ["ALL"]}},
            "volumeMounts": [{"name": "extensions", "mountPath": "/tmp/extensions/"},
                {"name": "tmp", "mountPath": "/tmp"}],
            "env": [{"name": "EXTENSION_URL", "value": "https://example.org/ext.tar"}]})
    );
    let server = container(find(&ms, "Deployment", "argocd-server"), "server");
    assert!(
        server["volumeMounts"]
            .as_array()
            .expect("mounts")
            .contains(&serde_json::json!({"name": "extensions", "mountPath": "/tmp/extensions"}))
    );
    let volumes: Vec<&str> = spec["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .map(|v| v["name"].as_str().expect("name"))
        .collect();
    assert_eq!(&volumes[..2], ["extensions", "plugins-home"]);
    // Enabled without extensions: the volume, no init container.
    let ms = render("server:\n  extensions: {enabled: true}\n");
    let spec = &find(&ms, "Deployment", "argocd-server")["spec"]["template"]["spec"];
    assert!(spec["initContainers"].is_null());
    assert_eq!(spec["volumes"][0]["name"], "extensions");
}

/// `server.certificate`: a cert-manager Certificate for argocd-server-tls;
/// with it upstream renders no Secret from `server.certificateSecret`.
#[test]
fn server_certificate_from_cert_manager() {
    let ms = render(
        "global:\n  domain: cd.example.org\n  certificateAnnotations: {team: platform, tier: a}\n\
         server:\n  certificateSecret: {enabled: true, crt: x, key: y}\n  certificate:\n    enabled: true\n\
         \x20   additionalHosts: [cd-alt.example.org]\n    duration: 2160h\n    annotations: {tier: b}\n\
         \x20   issuer: {kind: ClusterIssuer, name: letsencrypt}\n",
    );
    let cert = find(&ms, "Certificate", "argocd-server");
    assert_eq!(cert["apiVersion"], "cert-manager.io/v1");
    assert_eq!(
        cert["metadata"]["annotations"],
        serde_json::json!({"team": "platform", "tier": "b"})
    );
    assert_eq!(
        cert["spec"],
        serde_json::json!({"secretName": "argocd-server-tls", "commonName": "cd.example.org",
            "dnsNames": ["cd.example.org", "cd-alt.example.org"], "duration": "2160h",
            "issuerRef": {"kind": "ClusterIssuer", "name": "letsencrypt"},
            "privateKey": {"rotationPolicy": "Never", "encoding": "PKCS1", "algorithm": "RSA", "size": 2048}})
    );
    assert!(!has(&ms, "Secret", "argocd-server-tls"));
    assert!(!has(&render(""), "Certificate", "argocd-server"));
}

/// `repoServer.clusterRoleRules` (a ClusterRole only with
/// createClusterRoles, everything when no rules are given) and
/// `controller.metrics.rules` (a PrometheusRule with the Operator's API).
#[test]
fn repo_server_cluster_role_and_controller_prometheus_rule() {
    let ms = render("repoServer:\n  clusterRoleRules: {enabled: true}\n");
    assert_eq!(
        find(&ms, "ClusterRole", "argocd-repo-server")["rules"],
        serde_json::json!([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
            {"nonResourceURLs": ["*"], "verbs": ["*"]}])
    );
    assert_eq!(
        find(&ms, "ClusterRoleBinding", "argocd-repo-server")["subjects"],
        serde_json::json!([{"kind": "ServiceAccount", "name": "argocd-repo-server", "namespace": "argocd"}])
    );
    let ms =
        render("createClusterRoles: false\nrepoServer:\n  clusterRoleRules: {enabled: true}\n");
    assert!(!has(&ms, "ClusterRole", "argocd-repo-server"));
    assert!(!has(&render(""), "ClusterRole", "argocd-repo-server"));

    let values = "controller:\n  metrics:\n    enabled: true\n    rules:\n      enabled: true\n\
                  \x20     additionalLabels: {release: prom}\n      spec:\n\
                  \x20     - {alert: ArgoAppMissing, expr: absent(argocd_app_info) == 1, for: 15m}\n";
    assert!(!render(values).iter().any(|m| m.kind == "PrometheusRule"));
    let ms = with_monitoring(values);
    let rule = find(&ms, "PrometheusRule", "argocd-application-controller");
    assert_eq!(rule["metadata"]["labels"]["release"], "prom");
    assert_eq!(
        rule["spec"],
        serde_json::json!({"groups": [{"name": "argocd", "rules": [
            {"alert": "ArgoAppMissing", "expr": "absent(argocd_app_info) == 1", "for": "15m"}]}]})
    );
}

/// `<component>.vpa`: a VerticalPodAutoscaler per workload (the
/// controller's targets its StatefulSet); upstream renders Dex's even with
/// Dex disabled.
#[test]
fn vertical_pod_autoscalers() {
    let ms = render(
        "controller:\n  vpa:\n    enabled: true\n    updateMode: Auto\n    containerPolicy: {controlledResources: [cpu, memory]}\n\
         dex:\n  enabled: false\n  vpa: {enabled: true, labels: {team: id}}\n",
    );
    assert_eq!(
        find(
            &ms,
            "VerticalPodAutoscaler",
            "argocd-application-controller"
        )["spec"],
        serde_json::json!({"targetRef": {"apiVersion": "apps/v1", "kind": "StatefulSet",
                "name": "argocd-application-controller"},
            "updatePolicy": {"updateMode": "Auto"},
            "resourcePolicy": {"containerPolicies": [{"containerName": "application-controller",
                "controlledResources": ["cpu", "memory"]}]}})
    );
    let dex = find(&ms, "VerticalPodAutoscaler", "argocd-dex-server");
    assert_eq!(dex["metadata"]["labels"]["team"], "id");
    assert_eq!(dex["spec"]["updatePolicy"]["updateMode"], "Initial");
    assert_eq!(
        dex["spec"]["resourcePolicy"]["containerPolicies"],
        serde_json::json!([{"containerName": "dex-server"}])
    );
    assert!(!render("").iter().any(|m| m.kind == "VerticalPodAutoscaler"));
}

/// `configs.cmp`: argocd-cmp-cm with one ConfigManagementPlugin document
/// per plugin, its spec written as Helm's toYaml writes it (compared byte
/// for byte), and a checksum of it on the repo server's pods.
#[test]
fn config_management_plugins() {
    let ms = render(
        "configs:\n  cmp:\n    create: true\n    plugins:\n      envsubst:\n\
         \x20       init: {command: [sh, -c], args: [echo init]}\n\
         \x20       generate: {command: [sh, -c], args: [kustomize build . | envsubst]}\n\
         \x20       discover: {fileName: kustomization.yaml}\n",
    );
    let cm = find(&ms, "ConfigMap", "argocd-cmp-cm");
    assert_eq!(
        cm["metadata"]["labels"]["app.kubernetes.io/name"],
        "argocd-cmp-cm"
    );
    assert_eq!(
        cm["metadata"]["labels"]["app.kubernetes.io/component"],
        "repo-server"
    );
    assert_eq!(
        cm["data"]["envsubst.yaml"],
        "apiVersion: argoproj.io/v1alpha1\nkind: ConfigManagementPlugin\nmetadata:\n  name: envsubst\n\
         spec:\n  discover:\n    fileName: kustomization.yaml\n  generate:\n    args:\n\
         \x20   - kustomize build . | envsubst\n    command:\n    - sh\n    - -c\n  init:\n    args:\n\
         \x20   - echo init\n    command:\n    - sh\n    - -c\n"
    );
    assert!(pod_annotations(&ms, "argocd-repo-server")["checksum/cmp-cm"].is_string());
    let ms = render("");
    assert!(!has(&ms, "ConfigMap", "argocd-cmp-cm"));
    assert!(pod_annotations(&ms, "argocd-repo-server")["checksum/cmp-cm"].is_null());
}

/// Gateway API objects: the server's HTTPRoute to port 80 when
/// server.insecure (else 443) and its GRPCRoute, a BackendTLSPolicy and a
/// ListenerSet; the webhook HTTPRoute opens the webhook port in the
/// ApplicationSet NetworkPolicy, as upstream.
#[test]
fn gateway_api_routes_policy_and_listener_sets() {
    let ms = render(
        "configs:\n  params: {server.insecure: true}\n\
         server:\n  httproute:\n    enabled: true\n    parentRefs: [{name: public, namespace: gateways}]\n\
         \x20   hostnames: [cd.example.org]\n\
         \x20 grpcroute: {enabled: true, hostnames: [grpc.cd.example.org]}\n\
         \x20 backendTLSPolicy: {enabled: true, targetRefs: [{group: '', kind: Service, name: argocd-server}]}\n\
         \x20 listenerset: {enabled: true, parentRef: {name: public}, listeners: [{name: https, port: 443, protocol: HTTPS}]}\n\
         applicationSet:\n  httproute: {enabled: true}\n",
    );
    assert_eq!(
        find(&ms, "HTTPRoute", "argocd-server")["spec"],
        serde_json::json!({"parentRefs": [{"name": "public", "namespace": "gateways"}],
            "hostnames": ["cd.example.org"],
            "rules": [{"backendRefs": [{"group": "", "kind": "Service", "name": "argocd-server", "port": 80, "weight": 1}],
                "matches": [{"path": {"type": "PathPrefix", "value": "/"}}]}]})
    );
    assert_eq!(
        find(&ms, "GRPCRoute", "argocd-server-grpc")["spec"]["rules"],
        serde_json::json!([{"backendRefs": [{"name": "argocd-server", "port": 80, "weight": 1}],
            "matches": [{"method": {"type": "Exact"}}]}])
    );
    assert_eq!(
        find(&ms, "BackendTLSPolicy", "argocd-server")["spec"]["targetRefs"][0]["kind"],
        "Service"
    );
    assert_eq!(
        find(&ms, "ListenerSet", "argocd-server")["spec"],
        serde_json::json!({"parentRef": {"name": "public"},
            "listeners": [{"name": "https", "port": 443, "protocol": "HTTPS"}]})
    );
    let hook = find(&ms, "HTTPRoute", "argocd-applicationset-controller");
    assert_eq!(hook["spec"]["rules"][0]["backendRefs"][0]["port"], 7000);
    assert!(hook["spec"]["parentRefs"].is_null());
    assert_eq!(
        find(&ms, "NetworkPolicy", "argocd-applicationset-controller")["spec"]["ingress"][0],
        serde_json::json!({"ports": [{"port": "webhook"}]})
    );
    let secure = render("server:\n  httproute: {enabled: true}\n");
    assert_eq!(
        find(&secure, "HTTPRoute", "argocd-server")["spec"]["rules"][0]["backendRefs"][0]["port"],
        443
    );
    assert!(!render("").iter().any(|m| m.kind == "HTTPRoute"));
}

/// `server.ingress.controller: aws`: the ALB Ingress sends gRPC (by
/// Content-Type) to a second Service argocd-server-grpc; its TLS lists only
/// the main host.
#[test]
fn aws_alb_ingress_variant() {
    let ms = render(
        "server:\n  ingress:\n    enabled: true\n    controller: aws\n    tls: true\n\
         \x20   annotations: {alb.ingress.kubernetes.io/scheme: internet-facing}\n\
         \x20   extraHosts: [{name: alt.example.org}]\n\
         \x20   aws: {serviceAnnotations: {example.org/owner: platform}}\n",
    );
    let ing = find(&ms, "Ingress", "argocd-server");
    assert_eq!(
        ing["metadata"]["annotations"],
        serde_json::json!({
            "alb.ingress.kubernetes.io/conditions.argocd-server-grpc":
                "[{\"field\":\"http-header\",\"httpHeaderConfig\":{\"httpHeaderName\": \"Content-Type\", \"values\":[\"application/grpc\"]}}]\n",
            "alb.ingress.kubernetes.io/scheme": "internet-facing"})
    );
    let to = |name: &str| serde_json::json!({"service": {"name": name, "port": {"number": 443}}});
    assert_eq!(
        ing["spec"]["rules"],
        serde_json::json!([
            {"host": "argocd.example.com", "http": {"paths": [
                {"path": "/", "pathType": "Prefix", "backend": to("argocd-server-grpc")},
                {"path": "/", "pathType": "Prefix", "backend": to("argocd-server")}]}},
            {"host": "alt.example.org", "http": {"paths": [
                {"path": "/", "pathType": "Prefix", "backend": to("argocd-server")}]}}])
    );
    assert_eq!(
        ing["spec"]["tls"],
        serde_json::json!([{"hosts": ["argocd.example.com"], "secretName": "argocd-server-tls"}])
    );
    let svc = find(&ms, "Service", "argocd-server-grpc");
    assert_eq!(
        svc["metadata"]["annotations"],
        serde_json::json!({"alb.ingress.kubernetes.io/backend-protocol-version": "GRPC",
            "example.org/owner": "platform"})
    );
    assert_eq!(
        svc["metadata"]["labels"]["app.kubernetes.io/name"],
        "argocd-server-grpc"
    );
    assert_eq!(
        svc["spec"],
        serde_json::json!({"ports": [
                {"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080},
                {"name": "https", "protocol": "TCP", "port": 443, "targetPort": 8080}],
            "selector": {"app.kubernetes.io/name": "argocd-server", "app.kubernetes.io/instance": "argocd"},
            "sessionAffinity": "None", "type": "NodePort"})
    );
    // `controller: generic`, the default, may be given.
    let generic = options("server:\n  ingress: {enabled: true, controller: generic}\n").values;
    assert!(chart().check_values(&generic).is_empty());
}

/// `server.ingress.controller: gke`: the class and GKE's objects named by
/// annotation, and the BackendConfig, FrontendConfig and ManagedCertificate;
/// an unknown controller renders no Ingress, as upstream.
#[test]
fn gke_ingress_variant() {
    let ms = render(
        "server:\n  ingress:\n    enabled: true\n    controller: gke\n    ingressClassName: gce\n\
         \x20   gke:\n      backendConfig: {healthCheck: {type: HTTPS, requestPath: /healthz}}\n\
         \x20     frontendConfig: {redirectToHttps: {enabled: true}}\n\
         \x20     managedCertificate: {extraDomains: [alt.example.org]}\n",
    );
    let ing = find(&ms, "Ingress", "argocd-server");
    assert_eq!(
        ing["metadata"]["annotations"],
        serde_json::json!({"kubernetes.io/ingress.class": "gce",
            "networking.gke.io/managed-certificates": "argocd-server",
            "networking.gke.io/v1beta1.FrontendConfig": "argocd-server"})
    );
    assert!(ing["spec"]["ingressClassName"].is_null());
    assert_eq!(
        find(&ms, "BackendConfig", "argocd-server")["spec"],
        serde_json::json!({"healthCheck": {"type": "HTTPS", "requestPath": "/healthz"}})
    );
    assert_eq!(
        find(&ms, "FrontendConfig", "argocd-server")["spec"]["redirectToHttps"]["enabled"],
        true
    );
    assert_eq!(
        find(&ms, "ManagedCertificate", "argocd-server")["spec"]["domains"],
        serde_json::json!(["argocd.example.com", "alt.example.org"])
    );
    let none = render("server:\n  ingress: {enabled: true, controller: traefik}\n");
    assert!(!has(&none, "Ingress", "argocd-server"));
}

/// Keys upstream reads but only mentions in comments are keys of this chart
/// too; `crds` is listed as unsupported (the CRDs always install).
#[test]
fn commented_upstream_keys_are_known_and_crds_install_is_not_silent() {
    let values = options(
        "dex: {logLevel: debug, logFormat: json}\n\
         notifications:\n  metrics:\n    serviceMonitor: {interval: 1m, scrapeTimeout: 10s}\n\
         crds: {install: false}\n",
    )
    .values;
    let paths: Vec<String> = chart()
        .check_values(&values)
        .iter()
        .map(|w| w.path().to_string())
        .collect();
    assert_eq!(paths, ["crds"]);
    let ms = with_monitoring(
        "notifications:\n  metrics:\n    enabled: true\n    serviceMonitor: {enabled: true, interval: 1m, scrapeTimeout: 10s}\n",
    );
    let ep =
        &find(&ms, "ServiceMonitor", "argocd-notifications-controller")["spec"]["endpoints"][0];
    assert_eq!(ep["interval"], "1m");
    assert_eq!(ep["scrapeTimeout"], "10s");
}

// ---- values the chart does not act on --------------------------------------

#[test]
fn unsupported_and_unknown_values_are_named() {
    let values = options(
        "openshift: {enabled: true}\nserver:\n  replica: 2\n  route: {enabled: true}\n\
         configs:\n  cm: {my.own.key: x}\n  rbac: {policy.extra.csv: y}\n\
         global:\n  nodeSelector: {pool: a}\n\
         controller:\n  containerSecurityContext: {runAsUser: 1000}\n  resources: {limits: {cpu: 1}}\n",
    )
    .values;
    let warnings = chart().check_values(&values);
    let described: Vec<String> = warnings.iter().map(|w| w.to_string()).collect();
    assert_eq!(warnings.len(), 3, "{described:#?}");
    let paths: Vec<String> = warnings.iter().map(|w| w.path().to_string()).collect();
    assert_eq!(paths, ["openshift", "server.replica", "server.route"]);
    assert!(
        described[0].contains("OpenShift Routes and security settings are not ported"),
        "{}",
        described[0]
    );
    assert!(
        described[1].contains("not a key of this chart"),
        "{}",
        described[1]
    );
    assert!(matches!(
        warnings.clone().enforce(true),
        Err(ChartError::UnsupportedValues(w)) if w == warnings
    ));
    assert_eq!(
        warnings.clone().enforce(false).expect("not strict"),
        warnings
    );
    // Deleting a default with null, or giving every supported key, is fine.
    let fine =
        options("global:\n  nodeSelector: null\nserver:\n  ingressGrpc: {enabled: false}\n").values;
    assert!(chart().check_values(&fine).is_empty());
}

/// The audit: every key of the upstream chart's default values is either
/// supported or listed as unsupported with a reason (none is unknown), and
/// every listed key appears in docs/argocd-chart.md.
#[test]
fn every_upstream_key_is_supported_or_listed_as_unsupported() {
    let surface = std::fs::read_to_string(manifest_dir().join("templates/argocd/surface.yaml"))
        .expect("surface.yaml");
    let surface: Value = serde_saphyr::from_str(&surface).expect("surface.yaml parses");
    let docs = std::fs::read_to_string(manifest_dir().join("docs/argocd-chart.md")).expect("docs");
    for key in surface["unsupported"]
        .as_object()
        .expect("unsupported map")
        .keys()
    {
        assert!(
            docs.contains(&format!("`{key}`")),
            "docs/argocd-chart.md does not list `{key}`"
        );
    }
    let Some(shared) = shared_dir() else {
        eprintln!(
            "\n!!! SKIPPED the upstream-key audit: no shared/reference beside the checkout \
             (set TENDRIL_SHARED_DIR) !!!\n"
        );
        return;
    };
    let upstream = std::fs::read_to_string(shared.join("reference/argo-cd/chart-values.yaml"))
        .expect("upstream values");
    let warnings = chart().check_values(&options(&upstream).values);
    let unknown: Vec<String> = warnings
        .iter()
        .filter(|w| matches!(w, tendril::chart::ValueWarning::Unknown { .. }))
        .map(|w| w.path().to_string())
        .collect();
    assert!(
        unknown.is_empty(),
        "upstream keys neither supported nor listed: {unknown:#?}"
    );
    assert!(
        !warnings.is_empty(),
        "the upstream chart has keys tendril does not port"
    );
}

#[test]
fn tendril_render_warns_and_strict_refuses() {
    let run = |strict: bool| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tendril"));
        cmd.args(["render", "--redis-password", REDIS_PASSWORD])
            .args(["--set", "server.ingressGrpc.enabled=true,server.replica=2"])
            .args(["--set", "server.route.enabled=true"]);
        if strict {
            cmd.arg("--strict");
        }
        cmd.output().expect("run tendril render")
    };
    let lenient = run(false);
    assert!(
        lenient.status.success(),
        "{}",
        String::from_utf8_lossy(&lenient.stderr)
    );
    let stderr = String::from_utf8_lossy(&lenient.stderr);
    assert!(
        stderr.contains("warning: value `server.route` is not supported"),
        "{stderr}"
    );
    assert!(
        stderr.contains("warning: value `server.replica` is not a key"),
        "{stderr}"
    );
    assert!(!stderr.contains("ingressGrpc"), "{stderr}");
    assert!(String::from_utf8_lossy(&lenient.stdout).contains("name: argocd-server-grpc"));

    let strict = run(true);
    assert!(!strict.status.success());
    assert!(
        strict.stdout.is_empty(),
        "nothing is printed when strict refuses"
    );
    let stderr = String::from_utf8_lossy(&strict.stderr);
    assert!(
        stderr.contains("`server.route`") && stderr.contains("`server.replica`"),
        "{stderr}"
    );
}

/// The job option `tendril.argocd.strict_values` makes the deploy's render
/// refuse what would otherwise be a warning in the report.
#[test]
fn strict_values_job_option_refuses_the_render() {
    use tendril::argocd::{self, ArgoCdSpec};
    let mut spec = ArgoCdSpec::new("argocd");
    spec.values = serde_json::json!({"redis-ha": {"enabled": true}});
    let rendered = argocd::render(&spec).expect("lenient");
    let warnings = rendered.warnings();
    assert_eq!(warnings.len(), 1);
    assert_eq!(
        serde_json::to_value(warnings).expect("serialises"),
        serde_json::json!([{"kind": "unsupported", "path": "redis-ha",
            "reason": "the Redis HA subchart is not ported; use externalRedis for a highly available Redis"}])
    );
    assert!(!rendered.manifests().is_empty());
    spec.strict_values = true;
    let err = argocd::render(&spec).expect_err("strict refuses");
    assert!(err.to_string().contains("`redis-ha`"), "{err}");
}

/// A deploy renders once: the credentials only the cluster knows (the Redis
/// password, the preset admin password's hash) are put into that render, and
/// the result is exactly what rendering again with them would give.
#[test]
fn credentials_go_into_the_one_render() {
    use tendril::argocd::{self, AdminHash, ArgoCdSpec, REDIS_PASSWORD_PLACEHOLDER};
    let mut spec = ArgoCdSpec::new("argocd");
    spec.values = serde_json::json!({"server": {"replicas": 2}});
    spec.admin_password = Some(Secret::new("preset".to_string()));
    let rendered = argocd::render(&spec).expect("render");
    let admin = AdminHash {
        hash: Secret::new("$2b$10$abcdefghijklmnopqrstuv".to_string()),
        mtime: "2026-01-02T03:04:05Z".to_string(),
    };
    let redis = Secret::new(REDIS_PASSWORD.to_string());
    let installed = rendered.with_credentials(&redis, Some(&admin));

    let mut values = Values::new();
    values
        .merge_yaml(
            "server: {replicas: 2}\nconfigs:\n  secret:\n    argocdServerAdminPassword: \"$2b$10$abcdefghijklmnopqrstuv\"\n    argocdServerAdminPasswordMtime: \"2026-01-02T03:04:05Z\"\n",
            "test values",
        )
        .expect("values");
    let direct = Chart::embedded("argocd")
        .expect("embedded")
        .render(
            &RenderOptions::new("argocd", "argocd")
                .with_values(values)
                .with_input("redis_password", redis.clone()),
        )
        .expect("render with the credentials");
    assert_eq!(manifests_to_yaml(&installed), manifests_to_yaml(&direct));

    // the render itself keeps the placeholder (argocd.yaml) and no hash
    let yaml = rendered.to_yaml();
    assert!(
        !yaml.contains(&b64(REDIS_PASSWORD)),
        "the real password leaked into argocd.yaml"
    );
    assert!(yaml.contains(&b64(REDIS_PASSWORD_PLACEHOLDER)));
    assert!(!yaml.contains("admin.password"));
}

/// A preset admin password with a chart that renders no `argocd-secret`
/// would be dropped without a word: the render refuses it instead.
#[test]
fn preset_admin_password_needs_the_argocd_secret() {
    use tendril::argocd::{self, ArgoCdSpec};
    let mut spec = ArgoCdSpec::new("argocd");
    spec.values = serde_json::json!({"configs": {"secret": {"createSecret": false}}});
    assert!(
        argocd::render(&spec).is_ok(),
        "fine without a preset password"
    );
    spec.admin_password = Some(Secret::new("preset".to_string()));
    let err = argocd::render(&spec).expect_err("refused");
    assert!(err.to_string().contains("createSecret"), "{err}");
}

/// As upstream's `argo-cd.name`: `nameOverride` is cut to 63 characters
/// without a trailing `-` in names and selectors; blank styles are an empty
/// text (a literal block of blank lines); argocd-server-tls has no `ca.crt`.
#[test]
fn name_override_styles_and_server_tls_follow_upstream() {
    let ms = render(
        "nameOverride: \"foo-\"\n\
         configs:\n  styles: \"\\n  \\n\"\n\
         server:\n  certificateSecret:\n    enabled: true\n    crt: a\n    key: b\n    ca: c\n",
    );
    let server = find(&ms, "Deployment", "argocd-foo-server");
    assert_eq!(
        server["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"],
        "foo-server"
    );
    assert_eq!(data(&ms, "argocd-styles-cm")["custom.styles.css"], "");
    let tls = find(&ms, "Secret", "argocd-server-tls");
    let keys: Vec<&String> = tls["data"].as_object().expect("data").keys().collect();
    assert_eq!(keys, ["tls.crt", "tls.key"]);
}

#[test]
fn version_label_nulls_and_dex_probe_paths() {
    let ms = render(
        "global:\n  image:\n    tag: \"v1~x\"\n  additionalLabels: null\n\
         controller:\n  vpa: null\n  metrics:\n    applicationLabels:\n      enabled: true\n      labels: null\n\
         dex:\n  livenessProbe:\n    enabled: true\n    httpPath: \"/healthz/{a},b\"\n",
    );
    let controller = find(&ms, "StatefulSet", "argocd-application-controller");
    // Every character a label value may not hold becomes '-', as upstream.
    assert_eq!(
        controller["metadata"]["labels"]["app.kubernetes.io/version"],
        "v1-x"
    );
    let args = &controller["spec"]["template"]["spec"]["containers"][0]["args"];
    assert!(
        !args
            .as_array()
            .expect("args")
            .iter()
            .any(|a| a == "--metrics-application-labels"),
        "{args}"
    );
    let dex = find(&ms, "Deployment", "argocd-dex-server");
    assert_eq!(
        dex["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["path"],
        "/healthz/{a},b"
    );
    assert!(!ms.iter().any(|m| m.kind == "VerticalPodAutoscaler"));

    let ms = render("global:\n  additionalLabels:\n    team: 7\n    tier: web\n");
    let labels = &find(&ms, "Deployment", "argocd-server")["metadata"]["labels"];
    // Quoted: the API server refuses a label whose value is not a string.
    assert_eq!(labels["team"], "7");
    assert_eq!(labels["tier"], "web");

    // A label the chart sets itself is written twice, as upstream writes it,
    // and the last (the user's) wins, as when Helm's output is read.
    let ms = render("global:\n  additionalLabels:\n    app.kubernetes.io/part-of: mine\n");
    let labels = &find(&ms, "Deployment", "argocd-server")["metadata"]["labels"];
    assert_eq!(labels["app.kubernetes.io/part-of"], "mine");
}

#[test]
fn numbers_read_as_helm_reads_them_and_removed_texts_are_no_entry() {
    // YAML 1.1: a leading 0 is octal (a file mode), `08` is not octal.
    let ms = render(
        "server:\n  volumes:\n  - name: x\n    configMap: {name: y, defaultMode: 0644}\n\
         \x20 - name: z\n    secret: {secretName: s, defaultMode: 08}\n\
         configs:\n  cm:\n    resource.exclusions: null\n",
    );
    let server = find(&ms, "Deployment", "argocd-server");
    let volumes = server["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .expect("volumes");
    let mode = |name: &str, kind: &str| {
        volumes
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("volume {name}"))[kind]["defaultMode"]
            .clone()
    };
    assert_eq!(mode("x", "configMap"), 420);
    assert_eq!(mode("z", "secret"), 8);
    // Helm drops the default text removed with null.
    let cm = data(&ms, "argocd-cm");
    assert!(cm.get("resource.exclusions").is_none(), "{cm}");

    // A text with a control character cannot be a literal block: quoted.
    let ms = render("configs:\n  cm:\n    x: \"a\\u0007b\\nc\\n\"\n");
    assert_eq!(data(&ms, "argocd-cm")["x"], "a\u{7}b\nc\n");
    // A key written twice in argocd-secret keeps the last, as upstream's output reads.
    let ms = render(
        "configs:\n  secret:\n    githubSecret: a\n    extra:\n      webhook.github.secret: b\n",
    );
    let secret = find(&ms, "Secret", "argocd-secret");
    assert_eq!(secret["data"]["webhook.github.secret"], b64("b"));
}

#[test]
fn external_redis_credentials_without_a_host_are_refused() {
    let e = render_err("externalRedis:\n  username: u\n  password: p\n").to_string();
    assert!(e.contains("externalRedis.host"), "{e}");
    // With an existing Secret nothing is rendered from them: no error.
    let ms = render("externalRedis:\n  password: p\n  existingSecret: mine\n");
    assert!(
        ms.iter()
            .any(|m| m.kind == "Secret" && m.name == "argocd-redis")
    );
}

#[test]
fn null_removes_a_default_and_a_needed_one_is_named() {
    // Helm removes a key set to null, and its templates read a removed
    // mapping or list as empty: so does the embedded chart.
    let ms = render(
        "global:\n  podAnnotations: null\n  env: null\n\
         server:\n  podLabels: null\n  extraArgs: null\n  volumes: null\n",
    );
    let server = find(&ms, "Deployment", "argocd-server");
    let args = &server["spec"]["template"]["spec"]["containers"][0]["args"];
    assert_eq!(
        args,
        &serde_json::json!([
            "/usr/local/bin/argocd-server",
            "--port=8080",
            "--metrics-port=8083"
        ])
    );
    assert_eq!(
        server["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"],
        "argocd-server"
    );
    // A scalar the templates need cannot be removed: the error names it.
    let e = render_err("controller:\n  replicas: null\nserver:\n  podLabels: null\n").to_string();
    assert!(
        e.contains("chart defaults to null") && e.contains("controller.replicas, server.podLabels"),
        "{e}"
    );
}

#[test]
fn whole_number_floats_render_as_integers() {
    let ms = render("server:\n  replicas: 2.0\n  containerPorts:\n    server: 8.08e3\n");
    let server = find(&ms, "Deployment", "argocd-server");
    assert!(
        server["spec"]["replicas"].is_i64(),
        "{}",
        server["spec"]["replicas"]
    );
    assert_eq!(server["spec"]["replicas"], 2);
    let args = &server["spec"]["template"]["spec"]["containers"][0]["args"];
    assert_eq!(args[1], "--port=8080", "{args}");
}
