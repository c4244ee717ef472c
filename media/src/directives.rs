//! LL-HLS delivery directives (`_HLS_msn`, `_HLS_part`, `_HLS_skip`) in a playlist request's
//! query: the origin parses them strictly; the edge keys its cache on them (and only them).

/// The delivery directives of a playlist request.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Directives {
    pub msn: Option<u64>,
    pub part: Option<u64>,
    pub skip: bool,
}

const NAMES: [&str; 3] = ["_HLS_msn", "_HLS_part", "_HLS_skip"];

/// The raw values of the directives present in `query` (last one wins), other parameters
/// ignored: `[msn, part, skip]`.
fn raw(query: Option<&str>) -> [Option<&str>; 3] {
    let mut v = [None; 3];
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, val) = pair.split_once('=').unwrap_or((pair, ""));
        if let Some(i) = NAMES.iter().position(|n| *n == k) {
            v[i] = Some(val);
        }
    }
    v
}

/// Parses the directives; other query parameters (session ids, CMCD) are ignored.
pub fn parse(query: Option<&str>) -> Result<Directives, &'static str> {
    let [msn, part, skip] = raw(query);
    let number = |v: Option<&str>, why| v.map(|v| v.parse::<u64>().map_err(|_| why)).transpose();
    Ok(Directives {
        msn: number(msn, "_HLS_msn must be a decimal integer")?,
        part: number(part, "_HLS_part must be a decimal integer")?,
        skip: match skip {
            None | Some("NO") => false,
            Some("YES") | Some("v2") => true,
            Some(_) => return Err("_HLS_skip must be YES or v2"),
        },
    })
}

/// Whether the request is a blocking playlist reload.
pub fn is_blocking(query: Option<&str>) -> bool {
    raw(query)[0].is_some()
}

/// `path` plus the directives present in `query`, in a fixed order: the cache key of a
/// request (query parameters other than the directives never split a cache).
pub fn cache_key(path: &str, query: Option<&str>) -> String {
    let mut key = path.to_owned();
    let mut sep = '?';
    for (name, v) in NAMES.iter().zip(raw(query)) {
        if let Some(v) = v {
            key.push(sep);
            key.push_str(name);
            key.push('=');
            key.push_str(v);
            sep = '&';
        }
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directives_parse_strictly() {
        assert_eq!(
            parse(Some("_HLS_msn=5&_HLS_part=2&CMCD=x&_HLS_skip=YES")),
            Ok(Directives {
                msn: Some(5),
                part: Some(2),
                skip: true
            })
        );
        assert!(parse(Some("_HLS_msn=-1")).is_err());
        assert!(parse(Some("_HLS_msn=99999999999999999999999")).is_err());
        assert!(parse(Some("_HLS_part=abc")).is_err());
        assert!(parse(Some("_HLS_skip=maybe")).is_err());
        assert_eq!(parse(None), Ok(Directives::default()));
        assert!(is_blocking(Some("fcsid=1&_HLS_msn=3")));
        assert!(!is_blocking(Some("fcsid=_HLS_msn")));
    }

    #[test]
    fn cache_key_keeps_only_directives_in_order() {
        assert_eq!(
            cache_key(
                "/live/a/source/index.m3u8",
                Some("fcsid=1&_HLS_part=2&CMCD=x&_HLS_msn=5")
            ),
            "/live/a/source/index.m3u8?_HLS_msn=5&_HLS_part=2"
        );
        assert_eq!(
            cache_key("/live/a/source/1.m4s", Some("fcsid=9")),
            "/live/a/source/1.m4s"
        );
        assert_eq!(
            cache_key("/p", Some("_HLS_skip=YES&_HLS_msn=1")),
            "/p?_HLS_msn=1&_HLS_skip=YES"
        );
    }
}
