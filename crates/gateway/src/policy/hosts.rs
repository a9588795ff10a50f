//! Host patterns for the browse allow/deny lists and the bottle's network list.
//!
//! A pattern is an exact host (`example.com`), a suffix (`*.example.com`, which
//! matches hosts strictly below `example.com` but not `example.com` itself), or
//! an IP address (`10.0.0.1`, `[::1]`), which matches only that address. A bare
//! `*` is refused: an allow list that allows everything is not an allow list.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

/// One entry of a host list, already normalised (lowercase, no trailing dot).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// Exactly this host name.
    Exact(String),
    /// Any host strictly below this domain (the text after `*.`), not the domain itself.
    Suffix(String),
    /// Exactly this IP address; it never matches a host name.
    Ip(IpAddr),
}

/// A host being checked, normalised the same way as the patterns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Host {
    /// A DNS name (lowercase, no trailing dot).
    Name(String),
    /// An IP literal.
    Ip(IpAddr),
}

impl HostPattern {
    /// Parses one pattern as written in the policy file; the error is the reason
    /// to show the person who wrote it.
    pub fn parse(text: &str) -> Result<HostPattern, String> {
        let generic =
            || format!("{text:?} is not a host pattern; use \"example.com\" or \"*.example.com\"");
        let lower = text.to_ascii_lowercase();
        let trimmed = lower.strip_suffix('.').unwrap_or(&lower);
        if let Some(ip) = parse_ip(trimmed) {
            return Ok(HostPattern::Ip(ip));
        }
        // Schemes, ports, paths, user info and spaces are the usual ways a URL
        // ends up where a host belongs; none of them is part of a host.
        if trimmed.contains([':', '/', '?', '#', '@', '\\'])
            || trimmed.contains(char::is_whitespace)
        {
            return Err(generic());
        }
        if trimmed == "*" {
            return Err(format!(
                "{text:?} alone would allow every host, which a policy may not do; \
                 list the hosts, or use \"*.example.com\" for a whole domain"
            ));
        }
        let (suffix, rest) = match trimmed.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, trimmed),
        };
        if rest.contains('*') {
            return Err(format!(
                "{text:?}: a wildcard is allowed only as a whole first label, as in \"*.example.com\""
            ));
        }
        check_name(rest).map_err(|why| format!("{text:?} is not a host pattern: {why}"))?;
        Ok(if suffix {
            HostPattern::Suffix(rest.to_owned())
        } else {
            HostPattern::Exact(rest.to_owned())
        })
    }

    /// Whether this pattern covers `host`.
    pub(crate) fn matches(&self, host: &Host) -> bool {
        match (self, host) {
            (HostPattern::Exact(p), Host::Name(h)) => p == h,
            // The dot before the suffix keeps `evil-example.com` out of
            // `*.example.com`; requiring a longer host keeps `example.com` out.
            (HostPattern::Suffix(p), Host::Name(h)) => {
                h.len() > p.len() + 1
                    && h.ends_with(p.as_str())
                    && h.as_bytes()[h.len() - p.len() - 1] == b'.'
            }
            (HostPattern::Ip(p), Host::Ip(h)) => p == h,
            _ => false,
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(h) => f.write_str(h),
            HostPattern::Suffix(h) => write!(f, "*.{h}"),
            HostPattern::Ip(IpAddr::V4(ip)) => write!(f, "{ip}"),
            HostPattern::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
        }
    }
}

/// Normalises a host to check: lowercase, one trailing dot removed, IPv6
/// brackets removed. Anything that is neither a host name nor an IP address
/// is an error (the reason).
pub(crate) fn normalise_host(host: &str) -> Result<Host, String> {
    let lower = host.to_ascii_lowercase();
    let trimmed = lower.strip_suffix('.').unwrap_or(&lower);
    if let Some(ip) = parse_ip(trimmed) {
        return Ok(Host::Ip(ip));
    }
    check_name(trimmed).map_err(|why| format!("{host:?} is not a valid host: {why}"))?;
    Ok(Host::Name(trimmed.to_owned()))
}

/// An IPv4 address in dotted form, or an IPv6 address bare or in brackets.
fn parse_ip(text: &str) -> Option<IpAddr> {
    if let Some(inner) = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
        return inner.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    text.parse::<IpAddr>().ok()
}

/// Checks a lowercase DNS name; the error says what is wrong with it.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the host is empty".to_owned());
    }
    if !name.is_ascii() {
        return Err("write international names in their ASCII (\"xn--\") form".to_owned());
    }
    if name.len() > 253 {
        return Err("a host name has at most 253 characters".to_owned());
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("it has an empty label (two dots in a row, or a leading dot)".to_owned());
        }
        if label.len() > 63 {
            return Err(format!("the label {label:?} is longer than 63 characters"));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(format!("{c:?} is not allowed in a host name"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("the label {label:?} starts or ends with '-'"));
        }
    }
    // A numeric last label is how odd address spellings look (`10.1`,
    // `2130706433`); browsers read those as IP addresses, so they are refused
    // rather than treated as names.
    if name
        .rsplit('.')
        .next()
        .is_some_and(|last| last.chars().all(|c| c.is_ascii_digit()))
    {
        return Err("it looks like a number but is not a dotted IPv4 address".to_owned());
    }
    Ok(())
}
