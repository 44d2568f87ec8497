//! Connection-string handling: keyword options merged into the URI (keywords win, as in pymongo), and a
//! redacted form of the URI for anything a person may read.

/// Returns `uri` with `options` set in its query string, replacing any option of the same name
/// (compared case-insensitively, as MongoDB URI options are). Values are percent-encoded.
pub fn merge_uri_options(uri: &str, options: &[(String, String)]) -> String {
    if options.is_empty() {
        return uri.to_owned();
    }
    let (base, query) = match uri.split_once('?') {
        Some((b, q)) => (b.to_owned(), q),
        None => (uri.to_owned(), ""),
    };
    let overridden = |k: &str| options.iter().any(|(o, _)| o.eq_ignore_ascii_case(k));
    let mut pairs: Vec<String> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .filter(|p| !overridden(p.split('=').next().unwrap_or("")))
        .map(str::to_owned)
        .collect();
    pairs.extend(options.iter().map(|(k, v)| format!("{k}={}", percent_encode(v))));
    // A URI without a path needs the '/' before its query: "mongodb://h:1" -> "mongodb://h:1/?..".
    let hosts_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let slash = if base[hosts_end..].contains('/') { "" } else { "/" };
    format!("{base}{slash}?{}", pairs.join("&"))
}

fn percent_encode(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~:,".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The userinfo of a URI (`user:password`), found from the last `@`: a password may hold unencoded
/// `/`, `?` or `:` (invalid, but people type them), and must be hidden all the same.
fn userinfo(uri: &str) -> Option<(usize, &str)> {
    let start = uri.find("://")? + 3;
    let at = start + uri[start..].rfind('@')?;
    Some((start, &uri[start..at]))
}

/// The URI with any password replaced by `***`, for repr, logs and error messages.
pub fn redact(uri: &str) -> String {
    match userinfo(uri) {
        Some((start, info)) => {
            let user = info.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &uri[..start], &uri[start + info.len()..])
        }
        None => uri.to_owned(),
    }
}

/// Replaces every occurrence of the URI's password in `text`: driver messages sometimes echo it.
pub fn scrub(text: &str, uri: &str) -> String {
    match userinfo(uri).and_then(|(_, info)| info.split_once(':')) {
        Some((_, pw)) if !pw.is_empty() => {
            let mut out = text.replace(pw, "***");
            // The driver may have cut the password at a character it took for a delimiter.
            for part in pw.split(['?', '/', '#', '@']).filter(|p| p.len() >= 3) {
                out = out.replace(part, "***");
            }
            out
        }
        _ => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn keywords_override_uri_options() {
        let m = merge_uri_options(
            "mongodb://h:1/db?maxPoolSize=5&replicaSet=rs0",
            &o(&[("maxpoolsize", "10"), ("appName", "a b")]),
        );
        assert_eq!(m, "mongodb://h:1/db?replicaSet=rs0&maxpoolsize=10&appName=a%20b");
    }

    #[test]
    fn adds_slash_before_query() {
        assert_eq!(merge_uri_options("mongodb://h:1", &o(&[("w", "1")])), "mongodb://h:1/?w=1");
        assert_eq!(merge_uri_options("mongodb://h:1/", &o(&[])), "mongodb://h:1/");
    }

    #[test]
    fn redacts_password() {
        assert_eq!(redact("mongodb://u:secret@h:1/?x=1"), "mongodb://u:***@h:1/?x=1");
        assert_eq!(redact("mongodb://h:1/"), "mongodb://h:1/");
        assert_eq!(scrub("bad secret here", "mongodb://u:secret@h/"), "bad *** here");
        assert_eq!(scrub("nothing", "mongodb://h/"), "nothing");
        // An unencoded '?' in the password must not expose it.
        let uri = "mongodb://u:Secret?x@h:1/";
        assert!(!redact(uri).contains("Secret"));
        assert!(!scrub("invalid server address u:Secret: got Secret", uri).contains("Secret"));
    }
}
