/// The version name of a config: the first 16 hex digits of its SHA-256. Equal text, equal
/// version, on every machine and build — sidecars and the control plane compare these.
pub fn version_of(text: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(text);
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn stable_and_content_addressed() {
        // sha256("") = e3b0c442 98fc1c14 …
        assert_eq!(super::version_of(b""), "e3b0c44298fc1c14");
        assert_ne!(super::version_of(b"a: 1"), super::version_of(b"a: 2"));
    }
}
