//! Content digests as the formats write them: `sha256:` + 64 lowercase hex
//! (and `sha512:` + 128 where a reader must accept one). Every place that
//! makes, checks or takes apart such a string asks here.

use sha2::{Digest, Sha256};

/// The prefix of a SHA-256 digest.
pub const SHA256_PREFIX: &str = "sha256:";

/// `sha256:` + lowercase hex of the SHA-256 of `bytes`.
pub fn sha256_digest_string(bytes: &[u8]) -> String {
    prefixed_sha256(&Sha256::digest(bytes))
}

/// `sha256:` + lowercase hex of a finished 32-byte SHA-256 value.
pub fn prefixed_sha256(raw: &[u8]) -> String {
    format!("{SHA256_PREFIX}{}", hex::encode(raw))
}

/// True for `sha256:` followed by 64 lowercase hex digits.
pub fn is_sha256_digest(s: &str) -> bool {
    s.strip_prefix(SHA256_PREFIX)
        .is_some_and(|hex| is_lower_hex_of_len(hex, 64))
}

/// True for a content digest in `sha256:<64 hex>` or `sha512:<128 hex>` form.
pub fn is_content_digest(s: &str) -> bool {
    is_sha256_digest(s)
        || s.strip_prefix("sha512:")
            .is_some_and(|hex| is_lower_hex_of_len(hex, 128))
}

/// The hex part of a `sha256:` digest (the string itself when it has no
/// prefix): how blobs and artifact directories are named on disk.
pub fn sha256_hex(digest: &str) -> &str {
    digest.strip_prefix(SHA256_PREFIX).unwrap_or(digest)
}

fn is_lower_hex_of_len(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_recognised_and_taken_apart() {
        let d = sha256_digest_string(b"");
        assert_eq!(
            d,
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert!(is_sha256_digest(&d) && is_content_digest(&d));
        assert_eq!(sha256_hex(&d).len(), 64);
        assert!(!is_sha256_digest("sha256:ABC"));
        assert!(is_content_digest(&format!("sha512:{}", "a".repeat(128))));
        assert_eq!(sha256_hex("plain"), "plain");
    }
}
