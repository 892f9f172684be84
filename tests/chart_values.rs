//! Values merging and `--set` syntax, checked against Helm's documented rules
//! (helm.sh "Values Files", "The Format and Limitations of --set", and
//! `helm install --help`).

use serde_json::{Value, json};
use tendril::chart::{ChartError, Values, coalesce, merge_into};

fn set(exprs: &[&str]) -> Value {
    let mut v = Values::new();
    for e in exprs {
        v.set(e, false)
            .unwrap_or_else(|err| panic!("--set {e}: {err}"));
    }
    v.into_json()
}

fn set_string(expr: &str) -> Value {
    let mut v = Values::new();
    v.set(expr, true).unwrap();
    v.into_json()
}

fn set_err(expr: &str) -> String {
    let mut v = Values::new();
    match v.set(expr, false) {
        Err(e @ ChartError::Set { .. }) => e.to_string(),
        other => panic!("--set {expr}: expected a Set error, got {other:?}"),
    }
}

// ---- --set syntax ----

#[test]
fn simple_and_comma_separated() {
    assert_eq!(set(&["name=value"]), json!({"name": "value"}));
    assert_eq!(set(&["a=b,c=d"]), json!({"a": "b", "c": "d"}));
    // A trailing comma adds nothing.
    assert_eq!(set(&["a=b,"]), json!({"a": "b"}));
}

#[test]
fn dotted_paths_nest() {
    assert_eq!(
        set(&["outer.inner=value"]),
        json!({"outer": {"inner": "value"}})
    );
    assert_eq!(
        set(&["a.b.c=1,a.b.d=2,a.e=x"]),
        json!({"a": {"b": {"c": 1, "d": 2}, "e": "x"}})
    );
}

#[test]
fn backslash_makes_dots_commas_and_equals_literal() {
    assert_eq!(
        set(&[r"nodeSelector.kubernetes\.io/role=master"]),
        json!({"nodeSelector": {"kubernetes.io/role": "master"}})
    );
    assert_eq!(
        set(&[r"name=value1\,value2"]),
        json!({"name": "value1,value2"})
    );
    assert_eq!(set(&[r"a\=b=c"]), json!({"a=b": "c"}));
    assert_eq!(set(&[r"path=C:\\dir"]), json!({"path": r"C:\dir"}));
    // `=` inside a value needs no escape.
    assert_eq!(set(&["opt=k=v"]), json!({"opt": "k=v"}));
}

#[test]
fn curly_braces_make_lists() {
    assert_eq!(set(&["name={a,b,c}"]), json!({"name": ["a", "b", "c"]}));
    assert_eq!(set(&["name={}"]), json!({"name": []}));
    assert_eq!(
        set(&["l={1,true,x},n=2"]),
        json!({"l": [1, true, "x"], "n": 2})
    );
    assert_eq!(set(&[r"l={a\,b,c}"]), json!({"l": ["a,b", "c"]}));
}

#[test]
fn list_indexes() {
    assert_eq!(
        set(&["servers[0].port=80"]),
        json!({"servers": [{"port": 80}]})
    );
    assert_eq!(
        set(&["servers[0].port=80,servers[0].host=example"]),
        json!({"servers": [{"port": 80, "host": "example"}]})
    );
    // Gaps are filled with null.
    assert_eq!(set(&["l[2]=z"]), json!({"l": [null, null, "z"]}));
    assert_eq!(set(&["l[0]=x,l[1]=y"]), json!({"l": ["x", "y"]}));
    // Nested lists.
    assert_eq!(set(&["m[0][1]=x"]), json!({"m": [[null, "x"]]}));
}

#[test]
fn later_set_overrides_earlier() {
    assert_eq!(set(&["a=1", "a=2"]), json!({"a": 2}));
    assert_eq!(set(&["a.b=1", "a.c=2"]), json!({"a": {"b": 1, "c": 2}}));
    // A dotted path through a scalar replaces it with a mapping.
    assert_eq!(set(&["a=1", "a.b=2"]), json!({"a": {"b": 2}}));
}

#[test]
fn type_inference_like_helm() {
    assert_eq!(
        set(&["t=true,f=false,T=TRUE,F=False"]),
        json!({"t": true, "f": false, "T": true, "F": false})
    );
    assert_eq!(set(&["n=null"]), json!({"n": null}));
    assert_eq!(set(&["n=NULL"]), json!({"n": null}));
    assert_eq!(
        set(&["i=42,neg=-7,zero=0,plus=+5"]),
        json!({"i": 42, "neg": -7, "zero": 0, "plus": 5})
    );
    // A leading zero keeps a string; floats are not inferred; too big stays a string.
    assert_eq!(
        set(&["z=012,f=1.5,e=1e3,big=99999999999999999999,v=v1"]),
        json!({"z": "012", "f": "1.5", "e": "1e3", "big": "99999999999999999999", "v": "v1"})
    );
    assert_eq!(set(&["empty="]), json!({"empty": ""}));
}

#[test]
fn set_string_keeps_strings() {
    assert_eq!(
        set_string("t=true,i=42,n=null,z=0"),
        json!({"t": "true", "i": "42", "n": "null", "z": "0"})
    );
    assert_eq!(set_string("l={1,true}"), json!({"l": ["1", "true"]}));
    assert_eq!(set_string("a.b[1]=7"), json!({"a": {"b": [null, "7"]}}));
}

#[test]
fn syntax_errors_name_the_expression() {
    let e = set_err("name");
    assert!(e.contains("\"name\"") && e.contains("has no value"), "{e}");
    let e = set_err("a=1,b");
    assert!(e.contains("has no value"), "{e}");
    let e = set_err("=x");
    assert!(e.contains("key is empty"), "{e}");
    let e = set_err("l[x]=1");
    assert!(e.contains("list index"), "{e}");
    let e = set_err("l[1");
    assert!(e.contains("list index"), "{e}");
    let e = set_err("l[65537]=1");
    assert!(e.contains("maximum"), "{e}");
    let e = set_err("l={a,b");
    assert!(e.contains("unterminated list"), "{e}");
    let e = set_err("l[0]x=1");
    assert!(e.contains("after a list index"), "{e}");
    let e = set_err("");
    assert!(e.contains("empty expression"), "{e}");
}

// ---- merging values files ----

#[test]
fn values_files_merge_maps_and_replace_lists() {
    let mut v = Values::new();
    v.merge_yaml("a:\n  x: 1\n  y: 2\nlist: [1, 2, 3]\ns: one\n", "one.yaml")
        .unwrap();
    v.merge_yaml("a:\n  y: 20\n  z: 30\nlist: [9]\ns: two\n", "two.yaml")
        .unwrap();
    assert_eq!(
        v.as_json(),
        &json!({"a": {"x": 1, "y": 20, "z": 30}, "list": [9], "s": "two"})
    );
}

#[test]
fn set_applies_onto_values_from_files() {
    let mut v = Values::new();
    v.merge_yaml("l:\n- a\n- b\n- c\nm:\n  k: v\n", "f.yaml")
        .unwrap();
    v.set("l[1]=B,m.j=w", false).unwrap();
    assert_eq!(
        v.as_json(),
        &json!({"l": ["a", "B", "c"], "m": {"k": "v", "j": "w"}})
    );
}

#[test]
fn empty_values_file_is_empty_mapping_and_non_mapping_is_refused() {
    let mut v = Values::new();
    v.merge_yaml("", "empty.yaml").unwrap();
    v.merge_yaml("# only a comment\n", "comment.yaml").unwrap();
    assert_eq!(v.as_json(), &json!({}));
    let err = v.merge_yaml("- a\n- b\n", "list.yaml").unwrap_err();
    assert!(matches!(err, ChartError::ValuesNotMap { .. }), "{err:?}");
    assert!(err.to_string().contains("list.yaml"), "{err}");
    let err = v.merge_yaml("a: [unclosed\n", "bad.yaml").unwrap_err();
    assert!(matches!(err, ChartError::Yaml { .. }), "{err:?}");
    assert!(err.to_string().contains("bad.yaml"), "{err}");
}

#[test]
fn merge_into_replaces_non_maps() {
    let mut dst = json!({"a": {"b": 1}, "c": [1, 2]});
    merge_into(&mut dst, json!({"a": "scalar", "c": {"x": 1}}));
    assert_eq!(dst, json!({"a": "scalar", "c": {"x": 1}}));
}

// ---- coalescing with chart defaults ----

#[test]
fn coalesce_merges_maps_and_user_wins() {
    let defaults = json!({"image": {"repo": "r", "tag": "1"}, "replicas": 1, "only": "default"});
    let user = json!({"image": {"tag": "2"}, "replicas": 3, "extra": true});
    assert_eq!(
        coalesce(user, &defaults),
        json!({"image": {"repo": "r", "tag": "2"}, "replicas": 3, "only": "default", "extra": true})
    );
}

#[test]
fn coalesce_user_list_replaces_default_list() {
    let defaults = json!({"args": ["--a", "--b"], "tolerations": [{"key": "k"}]});
    let user = json!({"args": ["--c"]});
    assert_eq!(
        coalesce(user, &defaults),
        json!({"args": ["--c"], "tolerations": [{"key": "k"}]})
    );
}

#[test]
fn coalesce_null_deletes_a_default_key() {
    // A scalar goes; a mapping or list stays, empty (what Helm's templates
    // read for the key Helm removes).
    let defaults = json!({"a": {"b": 1, "c": 2}, "d": 3, "e": {"f": 1}, "l": [1]});
    let user = json!({"a": {"b": null}, "d": null, "e": null, "l": null});
    assert_eq!(
        coalesce(user, &defaults),
        json!({"a": {"c": 2}, "e": {}, "l": []})
    );
}

#[test]
fn coalesce_null_for_a_key_without_default_is_kept() {
    let defaults = json!({"a": 1});
    let user = json!({"z": null});
    assert_eq!(coalesce(user, &defaults), json!({"a": 1, "z": null}));
}

#[test]
fn coalesce_type_mismatch_user_wins() {
    let defaults = json!({"a": {"b": 1}, "s": "x"});
    let user = json!({"a": "flat", "s": {"m": 1}});
    assert_eq!(
        coalesce(user, &defaults),
        json!({"a": "flat", "s": {"m": 1}})
    );
}

#[test]
fn full_precedence_defaults_files_set_set_string() {
    // The same pipeline `tendril render` runs: files in order, --set, then --set-string.
    let defaults = json!({"a": 1, "b": {"c": 1, "d": 1}, "l": [1, 2], "gone": "x"});
    let mut user = Values::new();
    user.merge_yaml("a: 2\nb:\n  c: 2\n", "1.yaml").unwrap();
    user.merge_yaml("a: 3\ngone: null\n", "2.yaml").unwrap();
    user.set("b.d=4,l={7}", false).unwrap();
    user.set("a=5", true).unwrap();
    assert_eq!(
        coalesce(user.into_json(), &defaults),
        json!({"a": "5", "b": {"c": 2, "d": 4}, "l": [7]})
    );
}

#[test]
fn debug_output_redacts_values() {
    let mut v = Values::new();
    v.set("password=hunter2", false).unwrap();
    let dbg = format!("{v:?}");
    assert!(!dbg.contains("hunter2"), "{dbg}");
}

#[test]
fn whole_number_floats_in_a_values_file_are_integers() {
    // Helm reads values-file numbers as float64 and prints 2.0 as `2`.
    let mut v = Values::new();
    v.merge_yaml(
        "a: 2.0\nb: 1e3\nc: 1.5\nd: [3.0, -0.0]\ne: {f: 7}\n",
        "v.yaml",
    )
    .unwrap();
    let j = v.into_json();
    assert_eq!(
        j,
        json!({"a": 2, "b": 1000, "c": 1.5, "d": [3, 0], "e": {"f": 7}})
    );
    assert!(j["a"].is_i64() && j["b"].is_i64() && j["c"].is_f64());
}

#[test]
fn values_files_read_yaml_1_1_numbers_and_refuse_a_repeated_key() {
    let mut v = Values::new();
    v.merge_yaml("mode: 0644\nnot_octal: 08\nhex: 0x1F\n", "v.yaml")
        .unwrap();
    assert_eq!(
        v.into_json(),
        json!({"mode": 420, "not_octal": 8, "hex": 31})
    );
    let mut v = Values::new();
    let e = v
        .merge_yaml("a: 1\nb: 2\na: 3\n", "twice.yaml")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("twice.yaml") && e.contains("a key may appear only once"),
        "{e}"
    );
}
