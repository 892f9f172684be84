//! Rendering: context, filters, template errors, manifest validation,
//! namespaces, install order, determinism, and the `tendril render` command.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;
use tendril::Secret;
use tendril::chart::{
    Capabilities, Chart, ChartError, RenderOptions, RenderedManifest, Values, manifests_to_yaml,
};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/charts")
        .join(name)
}

/// A chart in memory: Chart.yaml, optional values.yaml, and the given files.
fn chart(values: &str, files: &[(&str, &str)]) -> Chart {
    let mut all = vec![(
        "Chart.yaml".to_string(),
        b"name: mem\nversion: 0.0.1\nappVersion: \"9.9\"\n".to_vec(),
    )];
    if !values.is_empty() {
        all.push(("values.yaml".to_string(), values.as_bytes().to_vec()));
    }
    for (p, t) in files {
        all.push((p.to_string(), t.as_bytes().to_vec()));
    }
    Chart::from_files(all, "mem").unwrap()
}

fn opts() -> RenderOptions {
    RenderOptions::new("rel", "ns")
}

/// Renders one expression through a template and returns its raw text.
fn expr(values: &str, tpl: &str) -> String {
    let c = chart(values, &[("templates/t.txt", tpl)]);
    let raw = c.render_raw(&opts()).unwrap();
    raw.into_iter().next().unwrap().1
}

fn render_err(c: &Chart) -> ChartError {
    match c.render(&opts()) {
        Err(e) => e,
        Ok(m) => panic!("expected an error, rendered {} objects", m.len()),
    }
}

// ---- the fixture chart ----

#[test]
fn basic_chart_snapshot() {
    let c = Chart::load(fixture("basic")).unwrap();
    let o = RenderOptions::new("demo", "apps")
        .with_input("password", Secret::new("pw-fixed".to_string()));
    let yaml = manifests_to_yaml(&c.render(&o).unwrap());
    insta::assert_snapshot!("basic_default", yaml);
}

#[test]
fn basic_chart_with_values_snapshot() {
    let c = Chart::load(fixture("basic")).unwrap();
    let mut v = Values::new();
    v.merge_yaml(
        "replicas: 3\nimage:\n  tag: v2\nlabels:\n  zone: a\n  team: core\nenv:\n- name: A\n  value: \"1\"\nservice:\n  enabled: false\n",
        "over.yaml",
    )
    .unwrap();
    v.set("config.greeting=hi,labels.team=null", false).unwrap();
    let yaml = manifests_to_yaml(&c.render(&opts().with_values(v)).unwrap());
    insta::assert_snapshot!("basic_values", yaml);
}

#[test]
fn install_order_crds_first_then_helm_kind_order() {
    let c = Chart::load(fixture("basic")).unwrap();
    let kinds: Vec<String> = c
        .render(&opts())
        .unwrap()
        .into_iter()
        .map(|m| m.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            "CustomResourceDefinition",
            "Secret",
            "ConfigMap",
            "ClusterRole",
            "Service",
            "Deployment"
        ]
    );
}

#[test]
fn unknown_kinds_come_last_sorted_by_kind() {
    let c = chart(
        "",
        &[(
            "templates/a.yaml",
            "apiVersion: x/v1\nkind: Zebra\nmetadata: {name: z}\n---\n\
             apiVersion: x/v1\nkind: Aardvark\nmetadata: {name: a}\n---\n\
             apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n---\n\
             apiVersion: v1\nkind: Namespace\nmetadata: {name: nspace}\n---\n\
             apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: sa}\n",
        )],
    );
    let kinds: Vec<String> = c
        .render(&opts())
        .unwrap()
        .into_iter()
        .map(|m| m.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            "Namespace",
            "ServiceAccount",
            "Deployment",
            "Aardvark",
            "Zebra"
        ]
    );
}

#[test]
fn same_kind_keeps_template_path_then_document_order() {
    let c = chart(
        "",
        &[
            (
                "templates/b.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: b1}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: b0}\n",
            ),
            (
                "templates/a.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a9}\n",
            ),
        ],
    );
    let names: Vec<String> = c
        .render(&opts())
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(names, ["a9", "b1", "b0"]);
}

#[test]
fn namespaces_are_filled_for_namespaced_kinds_only() {
    let c = chart(
        "",
        &[
            (
                "templates/a.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: filled}\n---\n\
                 apiVersion: v1\nkind: ConfigMap\nmetadata: {name: kept, namespace: other}\n---\n\
                 apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {name: crb}\n---\n\
                 apiVersion: example.org/v1\nkind: Gadget\nmetadata: {name: g}\n---\n\
                 apiVersion: example.org/v1\nkind: Widget\nmetadata: {name: w}\n",
            ),
            (
                "crds/gadget.yaml",
                "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n\
                 metadata: {name: gadgets.example.org}\n\
                 spec: {group: example.org, scope: Cluster, names: {kind: Gadget, plural: gadgets}}\n",
            ),
        ],
    );
    let ms = c.render(&opts()).unwrap();
    let get = |name: &str| -> &RenderedManifest { ms.iter().find(|m| m.name == name).unwrap() };
    assert_eq!(get("filled").namespace.as_deref(), Some("ns"));
    assert_eq!(get("filled").object["metadata"]["namespace"], json!("ns"));
    assert_eq!(get("kept").namespace.as_deref(), Some("other"));
    assert_eq!(get("crb").namespace, None);
    assert!(get("crb").object["metadata"].get("namespace").is_none());
    assert_eq!(get("gadgets.example.org").namespace, None);
    // Gadget is cluster-scoped by the chart's own CRD; Widget is unknown, so namespaced.
    assert_eq!(get("g").namespace, None);
    assert_eq!(get("w").namespace.as_deref(), Some("ns"));
    assert_eq!(get("w").source, "templates/a.yaml");
    assert_eq!(get("w").api_version, "example.org/v1");
}

#[test]
fn crds_are_not_templated() {
    let c = chart(
        "",
        &[(
            "crds/c.yaml",
            "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n\
             metadata:\n  name: c.example.org\n  annotations:\n    literal: \"{{ not a template }}\"\n",
        )],
    );
    let ms = c.render(&opts()).unwrap();
    assert_eq!(
        ms[0].object["metadata"]["annotations"]["literal"],
        json!("{{ not a template }}")
    );
}

#[test]
fn only_crds_belong_in_crds_dir() {
    let c = chart(
        "",
        &[(
            "crds/x.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
        )],
    );
    let e = render_err(&c).to_string();
    assert!(
        e.contains("crds/x.yaml") && e.contains("CustomResourceDefinitions"),
        "{e}"
    );
}

// ---- determinism ----

#[test]
fn same_input_gives_byte_identical_output() {
    let render = || {
        let c = Chart::load(fixture("basic")).unwrap();
        let mut v = Values::new();
        v.set("labels.b=2,labels.a=1,labels.c=3", false).unwrap();
        manifests_to_yaml(&c.render(&opts().with_values(v)).unwrap())
    };
    let first = render();
    for _ in 0..5 {
        assert_eq!(first, render());
    }
    // Same chart object rendered twice (compiled templates are cached).
    let c = Chart::load(fixture("basic")).unwrap();
    assert_eq!(
        manifests_to_yaml(&c.render(&opts()).unwrap()),
        manifests_to_yaml(&c.render(&opts()).unwrap())
    );
}

#[test]
fn maps_iterate_in_sorted_key_order() {
    let out = expr(
        "m:\n  zeta: 1\n  alpha: 2\n  mid: 3\n",
        "{% for k, v in values.m %}{{ k }}={{ v }};{% endfor %}",
    );
    assert_eq!(out, "alpha=2;mid=3;zeta=1;");
}

// ---- context ----

#[test]
fn context_release_chart_capabilities_inputs_template() {
    let c = chart(
        "",
        &[(
            "templates/t.txt",
            "{{ release.name }}|{{ release.namespace }}|{{ release.service }}|{{ chart.name }}|{{ chart.version }}|\
             {{ chart.appVersion }}|{{ chart.app_version }}|{{ capabilities.kube_version }}|{{ capabilities.kube_major }}|\
             {{ capabilities.kube_minor }}|{{ \"apps/v1\" in capabilities.api_versions }}|\
             {{ \"x.io/v1\" in capabilities.api_versions }}|{{ inputs.token }}|{{ template.name }}",
        )],
    );
    let o = opts()
        .with_input("token", Secret::new("tkn".to_string()))
        .with_capabilities(Capabilities {
            kube_version: "v1.29.3".to_string(),
            api_versions: vec!["apps/v1".to_string(), "x.io/v1".to_string()],
        });
    let raw = c.render_raw(&o).unwrap();
    assert_eq!(
        raw[0].1,
        "rel|ns|tendril|mem|0.0.1|9.9|9.9|v1.29.3|1|29|true|true|tkn|templates/t.txt"
    );
    let default_caps = Capabilities::default();
    assert_eq!(default_caps.kube_version, "v1.34.0");
    assert!(default_caps.api_versions.iter().any(|a| a == "policy/v1"));
}

#[test]
fn render_options_debug_hides_inputs_and_values() {
    let mut v = Values::new();
    v.set("password=hunter2", false).unwrap();
    let o = opts()
        .with_values(v)
        .with_input("redis_password", Secret::new("s3cr3t-pw".to_string()));
    let dbg = format!("{o:?}");
    assert!(
        !dbg.contains("s3cr3t-pw") && !dbg.contains("hunter2"),
        "{dbg}"
    );
    assert!(dbg.contains("redis_password"), "{dbg}");
}

// ---- filters and functions (the examples of docs/chart.md) ----

#[test]
fn filter_to_yaml() {
    assert_eq!(
        expr(
            "",
            r#"{{ {"b": [1, "x"], "a": "true", "c": {}, "d": []} | to_yaml }}"#
        ),
        "a: \"true\"\nb:\n- 1\n- x\nc: {}\nd: []"
    );
    assert_eq!(expr("", "{{ {} | to_yaml }}"), "{}");
    assert_eq!(expr("", "{{ [] | to_yaml }}"), "[]");
    assert_eq!(
        expr("s: \"line1\\nline2\\n\"\n", "{{ values.s | to_yaml }}"),
        "|\n  line1\n  line2"
    );
    // Strings that read back as another type are quoted.
    assert_eq!(
        expr(
            "",
            r#"{{ ["1", "0.5", "null", "", "yes", "on"] | to_yaml }}"#
        ),
        "- \"1\"\n- \"0.5\"\n- \"null\"\n- \"\"\n- \"yes\"\n- \"on\""
    );
}

#[test]
fn filter_to_json_and_back() {
    assert_eq!(
        expr("", r#"{{ {"b": 1, "a": [true]} | to_json }}"#),
        r#"{"a":[true],"b":1}"#
    );
    assert_eq!(
        expr("", r#"{% set x = "a: 1" | from_yaml %}{{ x.a }}"#),
        "1"
    );
    assert_eq!(
        expr("", r#"{% set x = '{"k": "v"}' | from_json %}{{ x.k }}"#),
        "v"
    );
}

#[test]
fn filter_indent_and_nindent_follow_helm() {
    assert_eq!(expr("", r#"{{ "a\nb" | indent(width=2) }}"#), "  a\n  b");
    assert_eq!(expr("", r#"{{ "a\n\nb" | indent(width=1) }}"#), " a\n \n b");
    assert_eq!(
        expr("", r#"x:{{ "a: 1" | nindent(width=2) }}"#),
        "x:\n  a: 1"
    );
    let c = chart("", &[("templates/t.txt", r#"{{ "a" | indent }}"#)]);
    let e = c.render_raw(&opts()).unwrap_err().to_string();
    assert!(e.contains("width"), "{e}");
}

#[test]
fn filter_b64_and_sha256() {
    assert_eq!(expr("", r#"{{ "s3cret" | b64encode }}"#), "czNjcmV0");
    assert_eq!(expr("", r#"{{ "czNjcmV0" | b64decode }}"#), "s3cret");
    assert_eq!(
        expr("", r#"{{ "abc" | sha256 }}"#),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert_eq!(expr("", "{{ 42 | b64encode }}"), "NDI=");
}

#[test]
fn filter_quote_and_squote() {
    assert_eq!(expr("", "{{ true | quote }}"), r#""true""#);
    assert_eq!(expr("", "{{ 1 | quote }}"), r#""1""#);
    assert_eq!(
        expr("s: 'a\"b\\c'\n", "{{ values.s | quote }}"),
        r#""a\"b\\c""#
    );
    assert_eq!(expr("", r#"{{ "l1\nl2" | quote }}"#), r#""l1\nl2""#);
    assert_eq!(expr("n: null\n", "[{{ values.n | quote }}]"), "[]");
    assert_eq!(expr("", r#"{{ "it's" | squote }}"#), "'it''s'");
}

#[test]
fn filter_trunc_and_trims() {
    assert_eq!(expr("", r#"{{ "abcdef" | trunc(length=3) }}"#), "abc");
    assert_eq!(expr("", r#"{{ "abcdef" | trunc(length=-2) }}"#), "ef");
    assert_eq!(expr("", r#"{{ "ab" | trunc(length=63) }}"#), "ab");
    assert_eq!(
        expr("", r#"{{ "name-" | trim_suffix(suffix="-") }}"#),
        "name"
    );
    assert_eq!(expr("", r#"{{ "v1.2" | trim_prefix(prefix="v") }}"#), "1.2");
}

#[test]
fn filter_label_safe_keeps_only_label_characters() {
    assert_eq!(
        expr("", r#"{{ "v1~x@sha256:ab" | label_safe }}"#),
        "v1-x-sha256-ab"
    );
    assert_eq!(expr("", r#"{{ "a_b.c-D9" | label_safe }}"#), "a_b.c-D9");
    // One `-` per character, not per byte.
    assert_eq!(expr("", r#"{{ "vé/1 2" | label_safe }}"#), "v--1-2");
    assert_eq!(expr("", r#"{{ 3.1 | label_safe }}"#), "3.1");
}

#[test]
fn filter_default_uses_helm_emptiness() {
    let v = "e: \"\"\nz: 0\nf: false\nl: []\nm: {}\nn: null\ns: set\n";
    for key in ["e", "z", "f", "l", "m", "n", "missing"] {
        let out = expr(
            v,
            &format!("{{{{ values.{key} | default(value=\"fb\") }}}}"),
        );
        assert_eq!(out, "fb", "key {key}");
    }
    assert_eq!(expr(v, r#"{{ values.s | default(value="fb") }}"#), "set");
}

#[test]
fn filter_merge_omit_compact() {
    assert_eq!(
        expr(
            "",
            r#"{{ {"a": {"x": 1}, "l": [1]} | merge(with={"a": {"y": 2}, "l": [2]}) | to_json }}"#
        ),
        r#"{"a":{"x":1,"y":2},"l":[2]}"#
    );
    assert_eq!(
        expr(
            "",
            r#"{{ {"a": 1, "b": 2, "c": 3} | omit(keys=["a", "c"]) | to_json }}"#
        ),
        r#"{"b":2}"#
    );
    assert_eq!(
        expr("", r#"{{ ["a", "", none, "b"] | compact | to_json }}"#),
        r#"["a","b"]"#
    );
}

#[test]
fn function_semver_compare() {
    let t = |c: &str, v: &str| {
        expr(
            "",
            &format!("{{{{ semver_compare(constraint=\"{c}\", version=\"{v}\") }}}}"),
        )
    };
    assert_eq!(t(">=1.25.0-0", "v1.34.0"), "true");
    assert_eq!(t("<1.25.0", "v1.34.0"), "false");
    assert_eq!(t(">=1.20, <1.30", "1.29.9"), "true");
    assert_eq!(t(">=1.20, <1.30", "1.30.0"), "false");
    assert_eq!(t("1.2.3", "v1.2.3"), "true");
}

// ---- template errors: file and line ----

fn template_error(c: &Chart) -> (String, usize, String) {
    match render_err(c) {
        ChartError::Template {
            file,
            line,
            message,
        } => (file, line, message),
        other => panic!("expected a template error, got {other}"),
    }
}

#[test]
fn syntax_error_names_file_and_line() {
    let c = chart(
        "",
        &[
            ("templates/ok.yaml", "a: 1\n"),
            ("templates/bad.yaml", "a: 1\nb: 2\nc: {{ values.x | }}\n"),
        ],
    );
    let (file, line, _) = template_error(&c);
    assert_eq!((file.as_str(), line), ("templates/bad.yaml", 3));
    let shown = render_err(&c).to_string();
    assert!(
        shown.starts_with("template templates/bad.yaml line 3:"),
        "{shown}"
    );
}

#[test]
fn undefined_value_names_file_and_line() {
    let c = chart(
        "a: 1\n",
        &[(
            "templates/cm.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ values.nope.deeper }}\n",
        )],
    );
    let (file, line, _) = template_error(&c);
    assert_eq!((file.as_str(), line), ("templates/cm.yaml", 4));
}

#[test]
fn error_inside_a_helper_component_names_the_helper() {
    let c = chart(
        "",
        &[
            (
                "templates/_helpers.tera",
                "{% component boom(x) %}\n{{ x.missing.field }}\n{% endcomponent boom %}\n",
            ),
            ("templates/use.yaml", "a: {{ <boom x={1}/> }}\n"),
        ],
    );
    let (file, line, _) = template_error(&c);
    assert_eq!((file.as_str(), line), ("templates/_helpers.tera", 2));
}

#[test]
fn required_fails_with_its_message() {
    let c = chart(
        "domain: \"\"\n",
        &[(
            "templates/x.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndata:\n  d: {{ values.domain | required(message=\"set global.domain\") }}\n",
        )],
    );
    let (file, line, message) = template_error(&c);
    assert_eq!((file.as_str(), line), ("templates/x.yaml", 6));
    assert!(message.contains("set global.domain"), "{message}");
    // Function form, and values that are present pass through.
    assert_eq!(
        expr(
            "d: example.org\n",
            "{{ required(value=values.d, message=\"m\") }}"
        ),
        "example.org"
    );
    assert_eq!(
        expr("z: 0\n", "{{ values.z | required(message=\"m\") }}"),
        "0"
    );
    let c = chart(
        "",
        &[(
            "templates/t.txt",
            "{{ required(value=none, message=\"need it\") }}",
        )],
    );
    assert!(
        c.render_raw(&opts())
            .unwrap_err()
            .to_string()
            .contains("need it")
    );
}

#[test]
fn fail_stops_the_render() {
    let c = chart(
        "replicas: 0\n",
        &[(
            "templates/x.yaml",
            "{% if values.replicas < 1 %}{{ fail(message=\"replicas must be > 0\") }}{% endif %}\n",
        )],
    );
    let (file, line, message) = template_error(&c);
    assert_eq!((file.as_str(), line), ("templates/x.yaml", 1));
    assert!(message.contains("replicas must be > 0"), "{message}");
}

// ---- manifest validation ----

fn manifest_error(doc: &str) -> String {
    let c = chart("", &[("templates/obj.yaml", doc)]);
    match render_err(&c) {
        e @ ChartError::Manifest { .. } => e.to_string(),
        other => panic!("expected a manifest error, got {other}"),
    }
}

#[test]
fn objects_need_api_version_kind_and_name() {
    let e = manifest_error("kind: ConfigMap\nmetadata:\n  name: x\n");
    assert!(
        e.contains("templates/obj.yaml") && e.contains("apiVersion"),
        "{e}"
    );
    let e = manifest_error("apiVersion: v1\nmetadata:\n  name: x\n");
    assert!(
        e.contains("templates/obj.yaml") && e.contains("`kind`"),
        "{e}"
    );
    let e = manifest_error("apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n");
    assert!(
        e.contains("ConfigMap") && e.contains("metadata.name"),
        "{e}"
    );
    let e = manifest_error("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: \"\"\n");
    assert!(e.contains("metadata.name"), "{e}");
    let e = manifest_error("apiVersion: 1\nkind: ConfigMap\nmetadata:\n  name: x\n");
    assert!(e.contains("must be a string"), "{e}");
    let e = manifest_error("- a\n- b\n");
    assert!(e.contains("not a Kubernetes object"), "{e}");
    let e = manifest_error("a: [unclosed\n");
    assert!(
        e.contains("templates/obj.yaml") && e.contains("not valid YAML"),
        "{e}"
    );
}

#[test]
fn empty_and_comment_only_documents_are_dropped() {
    let c = chart(
        "on: false\n",
        &[
            (
                "templates/empty.yaml",
                "{% if values.on %}a: 1{% endif %}\n",
            ),
            (
                "templates/comments.yaml",
                "# nothing here\n---\n---\n# still nothing\n",
            ),
            (
                "templates/two.yaml",
                "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: one}\n---\n\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: two}\n",
            ),
            ("templates/NOTES.txt", "{{ this would fail }}"),
            (
                "templates/_helpers.tera",
                "not yaml: [ {% component c() %}x{% endcomponent c %}",
            ),
        ],
    );
    let names: Vec<String> = c
        .render(&opts())
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(names, ["one", "two"]);
}

#[test]
fn manifests_to_yaml_puts_kind_fields_first_and_names_sources() {
    let c = chart(
        "",
        &[(
            "templates/cm.yaml",
            "data: {z: \"1\", a: \"2\"}\nmetadata: {name: cm}\nkind: ConfigMap\napiVersion: v1\n",
        )],
    );
    let yaml = manifests_to_yaml(&c.render(&opts()).unwrap());
    assert_eq!(
        yaml,
        "---\n# Source: templates/cm.yaml\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm\n  namespace: ns\ndata:\n  a: \"2\"\n  z: \"1\"\n"
    );
    // And it reads back to the same objects.
    let back: Vec<serde_json::Value> = serde_saphyr::from_multiple(&yaml).unwrap();
    assert_eq!(&back[0], c.render(&opts()).unwrap()[0].object.as_ref());
}

// ---- the command ----

fn tendril(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tendril"))
        .args(args)
        .env_remove("TENDRIL_REDIS_PASSWORD")
        .output()
        .unwrap()
}

fn chart_dir_with_password(tmp: &Path) -> PathBuf {
    let dir = tmp.join("pw");
    std::fs::create_dir_all(dir.join("templates")).unwrap();
    std::fs::write(dir.join("Chart.yaml"), "name: pw\nversion: 1.0.0\n").unwrap();
    std::fs::write(
        dir.join("templates/secret.yaml"),
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: redis\nstringData:\n  auth: {{ inputs.redis_password | quote }}\n",
    )
    .unwrap();
    dir
}

#[test]
fn command_renders_deterministically_with_a_fixed_password() {
    let dir = fixture("basic");
    let dir = dir.to_str().unwrap();
    let args = [
        "render",
        "--chart",
        dir,
        "--redis-password",
        "fixed",
        "--set",
        "replicas=2",
        "--set-string",
        "image.tag=007",
        "--namespace",
        "team",
        "--release",
        "r1",
    ];
    let a = tendril(&args);
    let b = tendril(&args);
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    assert_eq!(a.stdout, b.stdout);
    let text = String::from_utf8(a.stdout).unwrap();
    assert!(text.contains("replicas: 2"), "{text}");
    assert!(text.contains("image: example.org/app:007"), "{text}");
    assert!(text.contains("namespace: team"), "{text}");
    assert!(text.contains("name: r1-basic"), "{text}");
}

#[test]
fn command_draws_a_random_password_unless_given() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = chart_dir_with_password(tmp.path());
    let dir = dir.to_str().unwrap();
    let auth = |out: std::process::Output| -> String {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let docs: Vec<serde_json::Value> =
            serde_saphyr::from_multiple(std::str::from_utf8(&out.stdout).unwrap()).unwrap();
        docs[0]["stringData"]["auth"].as_str().unwrap().to_string()
    };
    let one = auth(tendril(&["render", "--chart", dir]));
    let two = auth(tendril(&["render", "--chart", dir]));
    assert_eq!(one.len(), 16);
    assert!(one.chars().all(|c| c.is_ascii_alphanumeric()), "{one}");
    assert_ne!(one, two);
    assert_eq!(
        auth(tendril(&[
            "render",
            "--chart",
            dir,
            "--redis-password",
            "keep-me"
        ])),
        "keep-me"
    );
}

#[test]
fn command_values_files_apply_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let f1 = tmp.path().join("1.yaml");
    let f2 = tmp.path().join("2.yaml");
    std::fs::write(&f1, "replicas: 4\nimage:\n  tag: one\n").unwrap();
    std::fs::write(&f2, "image:\n  tag: two\n").unwrap();
    let out = tendril(&[
        "render",
        "--chart",
        fixture("basic").to_str().unwrap(),
        "-f",
        f1.to_str().unwrap(),
        "-f",
        f2.to_str().unwrap(),
        "--redis-password",
        "x",
    ]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("replicas: 4") && text.contains("app:two"),
        "{text}"
    );
}

#[test]
fn command_errors_exit_non_zero_and_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out_file = tmp.path().join("out.yaml");
    let out = tendril(&[
        "render",
        "--chart",
        fixture("basic").to_str().unwrap(),
        "--set",
        "a[x]=1",
        "--output-file",
        out_file.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("error:") && stderr.contains("a[x]=1"),
        "{stderr}"
    );
    assert!(!out_file.exists());

    let out = tendril(&[
        "render",
        "--chart",
        tmp.path().join("nope").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope"));

    let missing = tmp.path().join("missing.yaml");
    let out = tendril(&[
        "render",
        "--chart",
        fixture("basic").to_str().unwrap(),
        "-f",
        missing.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.yaml"));
}

#[test]
fn command_output_file_matches_stdout() {
    let tmp = tempfile::tempdir().unwrap();
    let out_file = tmp.path().join("out.yaml");
    let base = [
        "render",
        "--chart",
        fixture("basic").to_str().unwrap().to_owned().leak(),
        "--redis-password",
        "p",
    ];
    let stdout = tendril(&base).stdout;
    let mut with_o: Vec<&str> = base.to_vec();
    with_o.extend(["--output-file", out_file.to_str().unwrap()]);
    let out = tendril(&with_o);
    assert!(out.status.success());
    assert!(out.stdout.is_empty());
    assert_eq!(std::fs::read(&out_file).unwrap(), stdout);
    let leftovers: HashSet<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(leftovers, HashSet::from(["out.yaml".to_string()]));
}

#[test]
fn command_renders_the_embedded_chart_by_default() {
    if Chart::embedded_archive("argocd").is_none() {
        panic!("the argocd chart must be embedded (templates/argocd)");
    }
    let a = tendril(&["render", "--redis-password", "fixed"]);
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    let b = tendril(&["render", "--redis-password", "fixed"]);
    assert_eq!(a.stdout, b.stdout);
    let docs: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(std::str::from_utf8(&a.stdout).unwrap()).unwrap();
    assert!(!docs.is_empty());
    assert!(docs.iter().all(|d| d["metadata"]["name"].is_string()));
}

#[test]
fn kube_version_constraint_of_chart_yaml_is_enforced() {
    // fixtures/charts/basic says kubeVersion: ">=1.25.0-0".
    let c = Chart::load(fixture("basic")).unwrap();
    let old = opts().with_capabilities(Capabilities {
        kube_version: "v1.24.9".to_string(),
        ..Capabilities::default()
    });
    let e = c.render(&old).unwrap_err().to_string();
    assert!(e.contains("kubeVersion") && e.contains("v1.24.9"), "{e}");
    let new = opts().with_capabilities(Capabilities {
        kube_version: "v1.25.0".to_string(),
        ..Capabilities::default()
    });
    assert!(c.render(&new).is_ok());
    let out = tendril(&[
        "render",
        "--chart",
        fixture("basic").to_str().unwrap(),
        "--kube-version",
        "1.20.0",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("kubeVersion"));
}

#[test]
fn unknown_component_is_a_template_error() {
    let c = chart(
        "",
        &[("templates/a.yaml", "a: 1\nb: {{ <nope x={1}/> }}\n")],
    );
    let e = render_err(&c);
    assert!(matches!(e, ChartError::Template { .. }), "{e}");
    let shown = e.to_string();
    assert!(shown.contains("nope"), "{shown}");
}

fn many_templates(extra: (&'static str, &'static str)) -> Chart {
    let cm = |n: &str| {
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{{{ <name n=\"{n}\"/> }}}}\n")
    };
    let files: Vec<(String, String)> = vec![
        (
            "templates/_helpers.tera".into(),
            "{% component name(n, @release) %}{{ release.name }}-{{ n }}{% endcomponent name %}"
                .into(),
        ),
        ("templates/a.yaml".into(), cm("a")),
        ("templates/b.yaml".into(), cm("b")),
        ("templates/c.yaml".into(), cm("c")),
        ("templates/d.yaml".into(), cm("d")),
        (extra.0.into(), extra.1.into()),
    ];
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, t)| (p.as_str(), t.as_str()))
        .collect();
    chart("", &refs)
}

#[test]
fn many_templates_compile_split_and_render_in_path_order() {
    let c = many_templates((
        "templates/e.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ <name n=\"e\"/> }}\n",
    ));
    let names: Vec<String> = c
        .render(&opts())
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(names, ["rel-a", "rel-b", "rel-c", "rel-d", "rel-e"]);
}

#[test]
fn many_templates_syntax_error_still_names_file_and_line() {
    let c = many_templates(("templates/e.yaml", "a: 1\nb: {% if %}\n"));
    let (file, line, _) = template_error(&c);
    assert_eq!((file.as_str(), line), ("templates/e.yaml", 2));
}

#[test]
fn many_templates_include_across_the_compile_split() {
    // e.yaml includes a.yaml, which may sit in the other compiled half.
    let c = many_templates(("templates/e.yaml", "{% include \"templates/a.yaml\" %}"));
    let names: Vec<String> = c
        .render(&opts())
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(names, ["rel-a", "rel-b", "rel-c", "rel-d", "rel-a"]);
}

#[test]
fn of_two_failing_templates_the_earlier_file_is_reported_every_time() {
    // The templates render on two threads, a.yaml and e.yaml in different
    // halves; the error must not depend on which thread finishes first, nor
    // on whether the templates were compiled by an earlier render.
    let mut files = vec![
        ("templates/a.yaml", "{{ fail(message=\"first\") }}"),
        (
            "templates/b.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: b\n",
        ),
        (
            "templates/c.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n",
        ),
        (
            "templates/d.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: d\n",
        ),
        ("templates/e.yaml", "{{ fail(message=\"second\") }}"),
    ];
    let c = chart("", &files);
    for attempt in 0..3 {
        let (file, _, message) = template_error(&c);
        assert_eq!(file, "templates/a.yaml", "attempt {attempt}: {message}");
        assert!(message.contains("first"), "attempt {attempt}: {message}");
    }
    // Output that is not YAML counts the same way as a template error.
    files[0] = ("templates/a.yaml", "a: [1, 2\n");
    let c = chart("", &files);
    for _ in 0..2 {
        match render_err(&c) {
            ChartError::Manifest { file, reason } => {
                assert_eq!(file, "templates/a.yaml", "{reason}");
                assert!(reason.contains("not valid YAML"), "{reason}");
            }
            other => panic!("expected a manifest error, got {other}"),
        }
    }
}

#[test]
fn a_long_manifest_list_prints_the_same_as_one_by_one() {
    let templates: Vec<(String, String)> = (0..40)
        .map(|i| {
            (
                format!("templates/cm{i:02}.yaml"),
                format!(
                    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm{i}\ndata:\n  n: \"{i}\"\n  text: |\n    line {i}\n"
                ),
            )
        })
        .collect();
    let refs: Vec<(&str, &str)> = templates
        .iter()
        .map(|(p, t)| (p.as_str(), t.as_str()))
        .collect();
    let manifests = chart("", &refs).render(&opts()).unwrap();
    assert_eq!(manifests.len(), 40);
    let together = manifests_to_yaml(&manifests);
    let one_by_one: String = manifests
        .iter()
        .map(|m| manifests_to_yaml(std::slice::from_ref(m)))
        .collect();
    assert_eq!(together, one_by_one);
    assert_eq!(together.matches("\n---\n").count() + 1, 40);
    assert!(together.starts_with("---\n# Source: templates/cm00.yaml\n"));
}

#[test]
fn test_printable_refuses_control_characters() {
    assert_eq!(expr("", r#"{{ "a\tb\nc é" is printable }}"#), "true");
    let v = "bell: \"a\\u0007b\\n\"\ncr: \"a\\r\\nb\"\n";
    assert_eq!(expr(v, "{{ values.bell is printable }}"), "false");
    assert_eq!(expr(v, "{{ values.cr is printable }}"), "false");
    // YAML 1.1 line breaks other than \n.
    let v = "nel: \"a\\Nb\\n\"\nls: \"a\\Lb\\n\"\n";
    assert_eq!(expr(v, "{{ values.nel is printable }}"), "false");
    assert_eq!(expr(v, "{{ values.ls is printable }}"), "false");
}
