//! Region groups for data boundaries.
//!
//! A feature's `boundary` names groups (`us`, `eu`, …); an endpoint's `region` is a cloud region.
//! The mapping is by the region's first segment, which is how AWS (`eu-west-1`), GCP
//! (`europe-west4`) and Azure-style names (`eastus` excepted) are built. A region that maps to no
//! known group has no group, and an endpoint in it can never satisfy a boundary.

/// The boundary group of a region, or `None` when it cannot be told.
///
/// A bare group name (`us`, `eu`) is its own group, for providers that only promise a geography.
/// `global` (Vertex's global endpoint) may process data anywhere, so it is only inside a boundary
/// that lists `global` itself.
pub fn region_group(region: &str) -> Option<&'static str> {
    let first = region.split('-').next().unwrap_or(region).to_ascii_lowercase();
    Some(match first.as_str() {
        "us" | "usgov" => "us",
        "eu" | "europe" => "eu",
        "ap" | "asia" | "australia" => "ap",
        "ca" | "northamerica" => "ca",
        "sa" | "southamerica" => "sa",
        "me" | "il" => "me",
        "af" | "africa" => "af",
        "mx" => "mx",
        "global" => "global",
        _ => return None,
    })
}

/// Group names a boundary may list.
pub const KNOWN_GROUPS: &[&str] = &["us", "eu", "ap", "ca", "sa", "me", "af", "mx", "global"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_follow_the_first_segment_across_clouds() {
        assert_eq!(region_group("us-east-1"), Some("us"));
        assert_eq!(region_group("us-east5"), Some("us"));
        assert_eq!(region_group("eu-central-1"), Some("eu"));
        assert_eq!(region_group("europe-west4"), Some("eu"));
        assert_eq!(region_group("asia-northeast1"), Some("ap"));
        assert_eq!(region_group("eu"), Some("eu"));
        assert_eq!(region_group("global"), Some("global"));
        assert_eq!(region_group("eastus"), None);
        assert_eq!(region_group(""), None);
    }
}
