//! AWS: SigV4 request signing and the credential chain, for Bedrock.

pub mod credentials;
pub mod sigv4;
