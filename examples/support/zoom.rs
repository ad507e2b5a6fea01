//! A stand-in Zoom seeded for the measuring programs: `users` users, all
//! in Engineering, no limits of its own unless given.

use std::time::Duration;

use zoom_fake::{self as fake, FakeConfig, FakeHandle, FaultsConfig, Limits, SeedGroup, SeedUser};

/// A fake Zoom with `users` users (`u0`, `u1`, …), all in Engineering.
pub async fn fake_zoom(users: usize, limits: Limits, latency: Duration) -> FakeHandle {
    let group = |id: &str, name: &str| SeedGroup {
        id: id.into(),
        name: name.into(),
    };
    let config = FakeConfig {
        groups: vec![group("grp_eng", "Engineering"), group("grp_sales", "Sales")],
        users: (0..users)
            .map(|i| SeedUser {
                id: format!("u{i}"),
                email: format!("u{i}@example.com"),
                first_name: String::new(),
                last_name: String::new(),
                groups: vec!["grp_eng".into()],
                primary_group: Some("grp_eng".into()),
            })
            .collect(),
        limits,
        faults: FaultsConfig {
            latency_ms: latency.as_millis() as u64,
            ..FaultsConfig::default()
        },
        ..FakeConfig::default()
    };
    fake::spawn(config, "127.0.0.1:0".parse().expect("address"))
        .await
        .expect("zoom-fake starts")
}
