//! Finding and checking the token a request presents. Pure string functions: the desktop,
//! the gateway and the agent each apply them to their own header types, so all three accept
//! the same forms.

use subtle::ConstantTimeEq;

/// The name of the cookie the web UI keeps the token in.
pub const TOKEN_COOKIE: &str = "bytebot_token";

/// The token of an `Authorization` header value: `Bearer <token>` (the scheme as `Bearer` or
/// `bearer`), trimmed. `None` for any other scheme.
pub fn bearer(authorization: &str) -> Option<&str> {
    authorization
        .strip_prefix("Bearer ")
        .or_else(|| authorization.strip_prefix("bearer "))
        .map(str::trim)
}

/// The [`TOKEN_COOKIE`] value among the request's `Cookie` header values.
pub fn cookie_token<'a>(cookie_headers: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    cookie_headers
        .into_iter()
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            c.trim()
                .strip_prefix(TOKEN_COOKIE)
                .and_then(|rest| rest.strip_prefix('='))
        })
}

/// Compares in constant time, so response timing leaks nothing of the token. An empty
/// expected token matches nothing.
pub fn token_matches(presented: &str, expected: &str) -> bool {
    !expected.is_empty() && bool::from(presented.as_bytes().ct_eq(expected.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_found_in_either_case_of_the_scheme() {
        assert_eq!(bearer("Bearer abc "), Some("abc"));
        assert_eq!(bearer("bearer abc"), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearerabc"), None);
    }

    #[test]
    fn the_token_cookie_is_found_among_others() {
        assert_eq!(cookie_token(["a=1; bytebot_token=xyz; b=2"]), Some("xyz"));
        assert_eq!(cookie_token(["a=1", "bytebot_token=q"]), Some("q"));
        assert_eq!(cookie_token(["bytebot_tokenx=1"]), None);
        assert_eq!(cookie_token(["a=1"]), None);
    }

    #[test]
    fn tokens_must_match_exactly() {
        assert!(token_matches("abc", "abc"));
        assert!(!token_matches("abd", "abc"));
        assert!(!token_matches("ab", "abc"));
        assert!(!token_matches("", ""));
    }
}
