//! Decision engine throughput: one Decide batch of 10,000 subjects (the largest a
//! call takes), each in 8 IdP groups, against settings with 50 mapped groups.
//! Run: `cargo bench -p muster-policy --bench decide`

use std::hint::black_box;
use std::time::Instant;

use muster_policy::domain::catalog::Catalog;
use muster_policy::domain::decision::{Current, DecisionEngine, Source, Subject, Trigger};
use muster_policy::domain::org::ProductKind;
use muster_policy::domain::settings::{GroupRef, Mapping, Mode, SettingsData};

fn main() {
    let catalog = Catalog::builtin();
    let product = catalog.product(ProductKind::ClaudeEnterpriseSeat);
    let groups_for =
        |prefix: &str, n: usize| (0..n).map(|i| GroupRef::id(&format!("{prefix}-{i}"))).collect::<Vec<_>>();
    let settings = SettingsData {
        mode: Mode::Scim,
        advanced_group_mapping: true,
        role_mappings: vec![
            Mapping { target: "Owner".into(), groups: groups_for("owner", 5) },
            Mapping { target: "Admin".into(), groups: groups_for("admin", 15) },
            Mapping { target: "User".into(), groups: groups_for("user", 20) },
        ],
        seat_tier_mappings: vec![
            Mapping { target: "Premium".into(), groups: groups_for("prem", 5) },
            Mapping { target: "Standard".into(), groups: groups_for("std", 5) },
        ],
    };
    let subjects: Vec<Subject> = (0..10_000)
        .map(|i| Subject {
            user_ref: format!("user-{i}"),
            assigned: i % 50 != 0,
            groups: (0..8)
                .map(|g| match g {
                    0 => GroupRef::id(&format!("user-{}", i % 20)),
                    1 if i % 10 == 0 => GroupRef::id(&format!("admin-{}", i % 15)),
                    2 => GroupRef::id(&format!("prem-{}", i % 7)),
                    _ => GroupRef { id: format!("other-{}", (i * 7 + g) % 5000), name: format!("Team {g}") },
                })
                .collect(),
            current: (i % 2 == 0).then(|| Current {
                role: "User".into(),
                seat_tier: Some("Standard".into()),
                source: Source::Directory,
            }),
        })
        .collect();

    // Warm up, then time whole batches (engine construction included, as in a call).
    for _ in 0..3 {
        let engine = DecisionEngine::new(product, &settings);
        let decisions: Vec<_> = subjects.iter().map(|s| engine.decide(Trigger::DirectorySync, s)).collect();
        black_box(decisions);
    }
    let rounds = 20;
    let mut times = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let started = Instant::now();
        let engine = DecisionEngine::new(product, &settings);
        let decisions: Vec<_> = subjects.iter().map(|s| engine.decide(Trigger::DirectorySync, s)).collect();
        black_box(decisions);
        times.push(started.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let median = times[rounds / 2];
    println!(
        "decide: batch of {} subjects x 8 groups, 50 mapped groups: median {:.2} ms, best {:.2} ms ({:.0} subjects/s at the median)",
        subjects.len(),
        median * 1e3,
        times[0] * 1e3,
        subjects.len() as f64 / median
    );
}
