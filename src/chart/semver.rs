//! Just enough semantic-version constraint checking for `kubeVersion` in
//! `Chart.yaml` and the `semver_compare` template function.
//!
//! A constraint is one or more alternatives separated by `||`; each
//! alternative is a list of comparisons separated by commas or spaces, all of
//! which must hold. A comparison is an operator (`=`, `==`, `!=`, `>`, `>=`,
//! `<`, `<=`, `~` for "same minor", `^` for "same major"; none means `=`) and
//! a version `MAJOR[.MINOR[.PATCH]]`; a leading `v`, pre-release (`-0`,
//! `-rc.1`) and build (`+x`) suffixes are ignored, and `x`/`*` in a place
//! matches anything there.

/// A version: major, minor, patch.
pub(crate) type Version = (u64, u64, u64);

/// Parses `v1.34.2`, `1.25.0-0`, `1.25` (missing parts are 0).
pub(crate) fn parse_version(s: &str) -> Option<Version> {
    match parse_pattern(s)? {
        (_, 0) => None,
        (v, _) => Some(v),
    }
}

/// Parses a version that may hold wildcards; returns it with the number of
/// leading parts that were given as numbers (1..=3).
fn parse_pattern(s: &str) -> Option<(Version, usize)> {
    let s = s.trim().trim_start_matches(['v', 'V']);
    let core = s.split(['-', '+']).next()?;
    let mut parts = [0u64; 3];
    let mut given = 0;
    for (i, p) in core.split('.').enumerate() {
        if i >= 3 {
            return None;
        }
        if p == "x" || p == "X" || p == "*" {
            break;
        }
        parts[i] = p.parse().ok()?;
        given = i + 1;
    }
    if given == 0 && !(core == "x" || core == "X" || core == "*") {
        return None;
    }
    Some(((parts[0], parts[1], parts[2]), given))
}

fn check_one(op: &str, v: Version, c: Version, given: usize) -> bool {
    // With wildcards (given < 3), compare only the given leading parts.
    let cut = |x: Version| -> Version {
        match given {
            0 => (0, 0, 0),
            1 => (x.0, 0, 0),
            2 => (x.0, x.1, 0),
            _ => x,
        }
    };
    let vv = cut(v);
    match op {
        "!=" => vv != c,
        ">" => vv > c,
        ">=" => vv >= c,
        "<" => vv < c,
        "<=" => vv <= c,
        "~" => v >= c && v.0 == c.0 && (given < 2 || v.1 == c.1),
        "^" => v >= c && v.0 == c.0,
        _ => vv == c,
    }
}

/// Whether `version` satisfies `constraint`; `Err` names what does not parse.
pub(crate) fn satisfies(constraint: &str, version: &str) -> Result<bool, String> {
    let v = parse_version(version).ok_or_else(|| format!("{version:?} is not a version"))?;
    for alt in constraint.split("||") {
        let mut all = true;
        let mut any_term = false;
        let mut tokens = alt
            .split([',', ' ', '\t'])
            .filter(|t| !t.is_empty())
            .peekable();
        while let Some(tok) = tokens.next() {
            // Allow a space between the operator and the version (">= 1.2").
            let tok = if ["=", "==", "!=", ">", ">=", "<", "<=", "~", "^"].contains(&tok) {
                match tokens.next() {
                    Some(next) => format!("{tok}{next}"),
                    None => return Err(format!("{constraint:?}: {tok:?} has no version")),
                }
            } else {
                tok.to_string()
            };
            let (op, rest) = ["<=", ">=", "!=", "==", "<", ">", "=", "~", "^"]
                .iter()
                .find_map(|op| tok.strip_prefix(op).map(|r| (*op, r)))
                .unwrap_or(("=", tok.as_str()));
            let (c, given) = parse_pattern(rest)
                .ok_or_else(|| format!("{constraint:?}: {tok:?} is not a version comparison"))?;
            any_term = true;
            if !check_one(op, v, c, given) {
                all = false;
            }
        }
        if any_term && all {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse() {
        assert_eq!(parse_version("v1.34.2"), Some((1, 34, 2)));
        assert_eq!(parse_version("1.25.0-0"), Some((1, 25, 0)));
        assert_eq!(parse_version("1.25"), Some((1, 25, 0)));
        assert_eq!(parse_version("v1.30.2-eks-1+abc"), Some((1, 30, 2)));
        assert_eq!(parse_version("x"), None);
        assert_eq!(parse_version("one"), None);
    }

    #[test]
    fn constraints() {
        let ok = |c: &str, v: &str| satisfies(c, v).unwrap();
        assert!(ok(">=1.25.0-0", "v1.34.0"));
        assert!(!ok(">=1.25.0-0", "v1.24.9"));
        assert!(ok(">= 1.20, < 1.30", "1.29.9"));
        assert!(!ok(">=1.20 <1.30", "1.30.0"));
        assert!(ok("<1.20 || >=1.30", "1.31.0"));
        assert!(!ok("<1.20 || >=1.30", "1.25.0"));
        assert!(ok("1.2.x", "1.2.9"));
        assert!(!ok("1.2.x", "1.3.0"));
        assert!(ok("~1.2.3", "1.2.9"));
        assert!(!ok("~1.2.3", "1.3.0"));
        assert!(ok("^1.2.3", "1.9.0"));
        assert!(!ok("^1.2.3", "2.0.0"));
        assert!(ok("!=1.2.3", "1.2.4"));
        assert!(satisfies(">=banana", "1.0.0").is_err());
        assert!(satisfies(">=1.0", "banana").is_err());
    }
}
