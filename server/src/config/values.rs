//! Values read the way etcd's Go code reads them: `strconv` booleans and
//! integers, `time.ParseDuration` durations, and URLs checked as etcd's
//! `types.NewURLs` checks them. Error texts are Go's, so that an operator sees
//! what etcd would have said.

use std::net::IpAddr;
use std::time::Duration;

/// `strconv.ParseBool`.
pub(crate) fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Why `strconv` refused a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NumError {
    Syntax,
    Range,
}

impl NumError {
    /// The text Go's `flag` package gives for its built-in numeric flags.
    pub(crate) fn flag_text(self) -> &'static str {
        match self {
            NumError::Syntax => "parse error",
            NumError::Range => "value out of range",
        }
    }

    /// The text of a raw `strconv.ParseUint` error.
    pub(crate) fn strconv_text(self, func: &str, input: &str) -> String {
        let why = match self {
            NumError::Syntax => "invalid syntax",
            NumError::Range => "value out of range",
        };
        format!("strconv.{func}: parsing {input:?}: {why}")
    }
}

/// `strconv.ParseUint(s, base, bits)` with base 0 (prefixes `0x`, `0o`, `0b`,
/// a leading `0` for octal, and `_` separators) or base 10.
pub(crate) fn parse_uint(s: &str, base0: bool, bits: u32) -> Result<u64, NumError> {
    if s.is_empty() {
        return Err(NumError::Syntax);
    }
    let (radix, digits) = if base0 {
        let b = s.as_bytes();
        if b.len() >= 2 && b[0] == b'0' {
            match b[1].to_ascii_lowercase() {
                b'x' => (16, &s[2..]),
                b'o' => (8, &s[2..]),
                b'b' => (2, &s[2..]),
                _ => (8, &s[1..]),
            }
        } else {
            (10, s)
        }
    } else {
        (10, s)
    };
    if base0 && !underscores_ok(s) {
        return Err(NumError::Syntax);
    }
    let max = if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    };
    let mut n: u64 = 0;
    let mut any = false;
    for c in digits.chars() {
        if c == '_' && base0 {
            continue;
        }
        let d = c.to_digit(radix).ok_or(NumError::Syntax)?;
        any = true;
        n = n
            .checked_mul(u64::from(radix))
            .and_then(|n| n.checked_add(u64::from(d)))
            .ok_or(NumError::Range)?;
    }
    if !any {
        return Err(NumError::Syntax);
    }
    if n > max {
        return Err(NumError::Range);
    }
    Ok(n)
}

/// Go's `underscoreOK`: in a base-0 literal `_` may only separate digits (a
/// base prefix counts as a digit).
fn underscores_ok(s: &str) -> bool {
    let b = s.as_bytes();
    // 'd' = digit or prefix, '_' = underscore, '^' = start, '!' = other.
    let mut saw = b'^';
    let mut i = 0;
    let mut hex = false;
    if b.len() >= 2 && b[0] == b'0' && matches!(b[1].to_ascii_lowercase(), b'b' | b'o' | b'x') {
        i = 2;
        saw = b'd';
        hex = b[1].eq_ignore_ascii_case(&b'x');
    }
    for &c in &b[i..] {
        if c.is_ascii_digit() || (hex && c.is_ascii_hexdigit()) {
            saw = b'd';
        } else if c == b'_' {
            if saw != b'd' {
                return false;
            }
            saw = b'_';
        } else {
            if saw == b'_' {
                return false;
            }
            saw = b'!';
        }
    }
    saw != b'_'
}

/// `strconv.ParseInt(s, 0, 64)`.
pub(crate) fn parse_int(s: &str) -> Result<i64, NumError> {
    let (neg, body) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let n = parse_uint(body, true, 64)?;
    if neg {
        if n > i64::MAX as u64 + 1 {
            return Err(NumError::Range);
        }
        Ok((n as i64).wrapping_neg())
    } else {
        i64::try_from(n).map_err(|_| NumError::Range)
    }
}

/// `time.ParseDuration`: a signed sequence of decimal numbers with units
/// (`ns`, `us`/`µs`, `ms`, `s`, `m`, `h`), e.g. `300ms`, `1.5h`, `2h45m`.
/// Returns nanoseconds, possibly negative.
pub(crate) fn parse_go_duration(orig: &str) -> Result<i64, String> {
    let invalid = || format!("time: invalid duration {orig:?}");
    let mut s = orig;
    let mut neg = false;
    if let Some(c) = s.chars().next()
        && (c == '-' || c == '+')
    {
        neg = c == '-';
        s = &s[1..];
    }
    if s == "0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(invalid());
    }
    const LIMIT: u64 = 1 << 63;
    let mut total: u64 = 0;
    while !s.is_empty() {
        let first = s.as_bytes()[0];
        if !(first == b'.' || first.is_ascii_digit()) {
            return Err(invalid());
        }
        // Integer part.
        let int_len = s.bytes().take_while(u8::is_ascii_digit).count();
        let mut v: u64 = 0;
        for d in s[..int_len].bytes() {
            v = v
                .checked_mul(10)
                .and_then(|v| v.checked_add(u64::from(d - b'0')))
                .filter(|v| *v <= LIMIT)
                .ok_or_else(invalid)?;
        }
        let pre = int_len > 0;
        s = &s[int_len..];
        // Fraction.
        let (mut f, mut scale, mut post) = (0u64, 1f64, false);
        if let Some(rest) = s.strip_prefix('.') {
            let frac_len = rest.bytes().take_while(u8::is_ascii_digit).count();
            let mut overflow = false;
            for d in rest[..frac_len].bytes() {
                if overflow {
                    continue;
                }
                match f
                    .checked_mul(10)
                    .and_then(|f| f.checked_add(u64::from(d - b'0')))
                    .filter(|f| *f <= LIMIT)
                {
                    Some(nf) => {
                        f = nf;
                        scale *= 10.0;
                    }
                    None => overflow = true,
                }
            }
            post = frac_len > 0;
            s = &rest[frac_len..];
        }
        if !pre && !post {
            return Err(invalid());
        }
        // Unit.
        let unit_len = s
            .char_indices()
            .find(|(_, c)| *c == '.' || c.is_ascii_digit())
            .map_or(s.len(), |(i, _)| i);
        if unit_len == 0 {
            return Err(format!("time: missing unit in duration {orig:?}"));
        }
        let unit_name = &s[..unit_len];
        s = &s[unit_len..];
        let unit: u64 = match unit_name {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => {
                return Err(format!(
                    "time: unknown unit {unit_name:?} in duration {orig:?}"
                ));
            }
        };
        if v > LIMIT / unit {
            return Err(invalid());
        }
        v *= unit;
        if f > 0 {
            v += (f as f64 * (unit as f64 / scale)) as u64;
            if v > LIMIT {
                return Err(invalid());
            }
        }
        total = total
            .checked_add(v)
            .filter(|t| *t <= LIMIT)
            .ok_or_else(invalid)?;
    }
    if neg {
        return Ok((total as i64).wrapping_neg());
    }
    i64::try_from(total).map_err(|_| invalid())
}

/// A Go duration that must not be negative (cairn has no use for negative
/// intervals; Go would accept them).
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let ns = parse_go_duration(s)?;
    u64::try_from(ns)
        .map(Duration::from_nanos)
        .map_err(|_| format!("negative duration {s:?} is not supported"))
}

/// Formats a duration as Go's `time.Duration.String` does for the whole
/// units that flags use (`1h0m0s`, `100ms`, `0s`).
pub(crate) fn format_go_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        return "0s".into();
    }
    if ns < 1_000_000_000 {
        return match ns {
            n if n % 1_000_000 == 0 => format!("{}ms", n / 1_000_000),
            n if n % 1_000 == 0 => format!("{}µs", n / 1_000),
            n => format!("{n}ns"),
        };
    }
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
    let frac = d.subsec_nanos();
    let s = if frac == 0 {
        format!("{s}s")
    } else {
        let f = format!("{frac:09}");
        format!("{s}.{}s", f.trim_end_matches('0'))
    };
    match (h, m) {
        (0, 0) => s,
        (0, m) => format!("{m}m{s}"),
        (h, m) => format!("{h}h{m}m{s}"),
    }
}

/// A URL taken apart as far as etcd looks at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Url {
    pub scheme: String,
    /// `host:port` (IPv6 hosts in brackets), without user information.
    pub host: String,
    /// The URL as etcd prints it back: scheme lower-cased, nothing else changed.
    pub canonical: String,
}

/// One URL as `url.Parse` then `types.NewURLs` accept it: scheme http, https,
/// unix or unixs, an address of the form `host:port`, and no path.
pub(crate) fn parse_url(input: &str) -> Result<Url, String> {
    let s = input.trim();
    let parse_err = |why: &str| format!("parse {s:?}: {why}");
    let (before_frag, fragment) = match s.split_once('#') {
        Some((a, f)) => (a, Some(f)),
        None => (s, None),
    };
    // Scheme: [a-zA-Z][a-zA-Z0-9+-.]* followed by ':'.
    let mut scheme = "";
    let mut rest = before_frag;
    for (i, c) in before_frag.char_indices() {
        match c {
            'a'..='z' | 'A'..='Z' => {}
            '0'..='9' | '+' | '-' | '.' if i > 0 => {}
            ':' if i == 0 => return Err(parse_err("missing protocol scheme")),
            ':' => {
                scheme = &before_frag[..i];
                rest = &before_frag[i + 1..];
                break;
            }
            _ => break,
        }
    }
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    if scheme.is_empty() {
        let first_segment = rest.split('/').next().unwrap_or("");
        if first_segment.contains(':') {
            return Err(parse_err("first path segment in URL cannot contain colon"));
        }
    }
    let scheme = scheme.to_ascii_lowercase();
    let (authority, path) = match rest.strip_prefix("//") {
        Some(r) => match r.find('/') {
            Some(i) => (Some(&r[..i]), &r[i..]),
            None => (Some(r), ""),
        },
        // An opaque URL ("http:foo") or a bare path has no host.
        None => (None, rest),
    };
    let (userinfo, host) = match authority {
        Some(a) => match a.rfind('@') {
            Some(i) => (Some(&a[..i]), &a[i + 1..]),
            None => (None, a),
        },
        None => (None, ""),
    };
    if let Some(colon) = host_port_colon(host)
        && !host[colon + 1..].bytes().all(|b| b.is_ascii_digit())
    {
        return Err(parse_err(&format!(
            "invalid port {:?} after host",
            &host[colon..]
        )));
    }
    if !matches!(scheme.as_str(), "http" | "https" | "unix" | "unixs") {
        return Err(format!(
            "URL scheme must be http, https, unix, or unixs: {s}"
        ));
    }
    if split_host_port(host).is_err() {
        return Err(format!(
            "URL address does not have the form \"host:port\": {s}"
        ));
    }
    if !path.is_empty() {
        return Err(format!("URL must not contain a path: {s}"));
    }
    let mut canonical = format!("{scheme}://");
    if let Some(u) = userinfo {
        canonical.push_str(u);
        canonical.push('@');
    }
    canonical.push_str(host);
    if let Some(q) = query {
        canonical.push('?');
        canonical.push_str(q);
    }
    if let Some(f) = fragment {
        canonical.push('#');
        canonical.push_str(f);
    }
    Ok(Url {
        scheme,
        host: host.to_string(),
        canonical,
    })
}

/// Where the port's colon is in a URL host, if it has one (Go's url.Parse
/// checks the port of `host:port` and `[v6]:port`).
fn host_port_colon(host: &str) -> Option<usize> {
    if host.starts_with('[') {
        let end = host.find(']')?;
        (host.as_bytes().get(end + 1) == Some(&b':')).then_some(end + 1)
    } else {
        let i = host.rfind(':')?;
        // An unbracketed IPv6 literal has no port to check here.
        (!host[..i].contains(':')).then_some(i)
    }
}

/// `net.SplitHostPort`.
pub(crate) fn split_host_port(hostport: &str) -> Result<(&str, &str), String> {
    let missing_port = || format!("address {hostport}: missing port in address");
    let too_many = || format!("address {hostport}: too many colons in address");
    let (host, port) = if let Some(rest) = hostport.strip_prefix('[') {
        let end = rest
            .find(']')
            .ok_or_else(|| format!("address {hostport}: missing ']' in address"))?;
        let after = &rest[end + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => p,
            None if after.is_empty() => return Err(missing_port()),
            None => return Err(too_many()),
        };
        (&rest[..end], port)
    } else {
        let i = hostport.rfind(':').ok_or_else(missing_port)?;
        let host = &hostport[..i];
        if host.contains(':') {
            return Err(too_many());
        }
        (host, &hostport[i + 1..])
    };
    if host.contains('[') || host.contains(']') || port.contains('[') || port.contains(']') {
        return Err(format!(
            "address {hostport}: unexpected '[' or ']' in address"
        ));
    }
    Ok((host, port))
}

/// A comma-separated URL list as etcd's URL flags take it: each URL checked,
/// the list sorted and without duplicates. `exceptions` are accepted as they
/// are (`*` for `--cors`).
pub(crate) fn parse_url_list(s: &str, exceptions: &[&str]) -> Result<Vec<String>, String> {
    if exceptions.contains(&s) {
        return Ok(vec![s.to_string()]);
    }
    let mut out = Vec::new();
    for part in s.split(',') {
        out.push(parse_url(part)?.canonical);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// etcd's `checkBindURLs`: a URL to listen on names an IP address or
/// `localhost` (unix sockets excepted).
pub(crate) fn check_bind_url(canonical: &str) -> Result<(), String> {
    let u = parse_url(canonical)?;
    if u.scheme == "unix" || u.scheme == "unixs" {
        return Ok(());
    }
    let (host, _) = split_host_port(&u.host)?;
    if host == "localhost" || host.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    Err(format!("expected IP in URL for binding ({canonical})"))
}

/// etcd's `checkHostURLs`: an advertised URL has a host.
pub(crate) fn check_host_url(canonical: &str) -> Result<(), String> {
    let u = parse_url(canonical)?;
    let (host, _) = split_host_port(&u.host)?;
    if host.is_empty() {
        return Err(format!("unexpected empty host ({canonical})"));
    }
    Ok(())
}

/// Go's `%q` of a `[]string`: `["a" "b"]`.
pub(crate) fn go_quote_list(v: &[String]) -> String {
    let parts: Vec<String> = v.iter().map(|s| format!("{s:?}")).collect();
    format!("[{}]", parts.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse_like_time_parse_duration() {
        assert_eq!(parse_go_duration("100ms"), Ok(100_000_000));
        assert_eq!(parse_go_duration("1.5h"), Ok(5_400_000_000_000));
        assert_eq!(parse_go_duration("2h45m"), Ok(9_900_000_000_000));
        assert_eq!(parse_go_duration("-1s"), Ok(-1_000_000_000));
        assert_eq!(parse_go_duration("0"), Ok(0));
        assert_eq!(parse_go_duration("1µs"), Ok(1_000));
        assert_eq!(parse_go_duration(".5s"), Ok(500_000_000));
        assert_eq!(
            parse_go_duration("1"),
            Err("time: missing unit in duration \"1\"".into())
        );
        assert_eq!(
            parse_go_duration("1d"),
            Err("time: unknown unit \"d\" in duration \"1d\"".into())
        );
        assert_eq!(
            parse_go_duration(""),
            Err("time: invalid duration \"\"".into())
        );
        assert_eq!(
            parse_go_duration("3000000h"),
            Err("time: invalid duration \"3000000h\"".into())
        );
    }

    #[test]
    fn go_durations_format_like_duration_string() {
        assert_eq!(format_go_duration(Duration::from_secs(7200)), "2h0m0s");
        assert_eq!(format_go_duration(Duration::from_millis(100)), "100ms");
        assert_eq!(format_go_duration(Duration::from_secs(20)), "20s");
        assert_eq!(format_go_duration(Duration::from_secs(600)), "10m0s");
        assert_eq!(format_go_duration(Duration::ZERO), "0s");
        assert_eq!(format_go_duration(Duration::from_millis(1500)), "1.5s");
    }

    #[test]
    fn integers_parse_like_strconv_with_base_zero() {
        assert_eq!(parse_uint("100000", true, 64), Ok(100_000));
        assert_eq!(parse_uint("0x10", true, 64), Ok(16));
        assert_eq!(parse_uint("010", true, 64), Ok(8));
        assert_eq!(parse_uint("0", true, 64), Ok(0));
        assert_eq!(parse_uint("1_000", true, 64), Ok(1000));
        assert_eq!(parse_uint("1__0", true, 64), Err(NumError::Syntax));
        assert_eq!(parse_uint("-1", true, 64), Err(NumError::Syntax));
        assert_eq!(parse_uint("4294967296", false, 32), Err(NumError::Range));
        assert_eq!(parse_uint("0x", true, 64), Err(NumError::Syntax));
        assert_eq!(parse_int("-1"), Ok(-1));
        assert_eq!(parse_int("-9223372036854775808"), Ok(i64::MIN));
        assert_eq!(parse_int("9223372036854775808"), Err(NumError::Range));
        assert_eq!(parse_int("ten"), Err(NumError::Syntax));
    }

    #[test]
    fn urls_are_checked_like_etcds_new_urls() {
        assert_eq!(
            parse_url(" HTTP://127.0.0.1:2379 ").unwrap().canonical,
            "http://127.0.0.1:2379"
        );
        assert_eq!(
            parse_url("ftp://a:1").unwrap_err(),
            "URL scheme must be http, https, unix, or unixs: ftp://a:1"
        );
        assert_eq!(
            parse_url("localhost:2379").unwrap_err(),
            "URL scheme must be http, https, unix, or unixs: localhost:2379"
        );
        assert_eq!(
            parse_url("127.0.0.1:2379").unwrap_err(),
            "parse \"127.0.0.1:2379\": first path segment in URL cannot contain colon"
        );
        assert_eq!(
            parse_url("http://example.com").unwrap_err(),
            "URL address does not have the form \"host:port\": http://example.com"
        );
        assert_eq!(
            parse_url("http://a:1/x").unwrap_err(),
            "URL must not contain a path: http://a:1/x"
        );
        assert_eq!(
            parse_url("http://a:b").unwrap_err(),
            "parse \"http://a:b\": invalid port \":b\" after host"
        );
        assert_eq!(parse_url("http://[::1]:2379").unwrap().host, "[::1]:2379");
        assert_eq!(
            parse_url_list("http://b:2,http://a:1,http://b:2", &[]).unwrap(),
            ["http://a:1", "http://b:2"]
        );
    }

    #[test]
    fn bind_urls_need_an_ip_or_localhost() {
        assert!(check_bind_url("http://0.0.0.0:2379").is_ok());
        assert!(check_bind_url("http://[::]:2379").is_ok());
        assert!(check_bind_url("http://localhost:2379").is_ok());
        assert!(check_bind_url("unix://anything:1").is_ok());
        assert_eq!(
            check_bind_url("http://example.com:2379").unwrap_err(),
            "expected IP in URL for binding (http://example.com:2379)"
        );
        assert_eq!(
            check_host_url("http://:2380").unwrap_err(),
            "unexpected empty host (http://:2380)"
        );
    }
}
