//! The order in which a domain's MX hosts are tried (RFC 5321 §5.1): lowest
//! preference first, in random order among equal preferences so that load
//! spreads; and the null MX of RFC 7505 (one record, preference 0, exchange
//! `.`), which says the domain accepts no mail. No I/O here.

use rand::Rng;
use rand::seq::SliceRandom;

/// What the MX records say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MxPlan {
    /// The domain accepts no mail (null MX, RFC 7505).
    NullMx,
    /// Host names to try, in order (lower case, without the final dot).
    Hosts(Vec<String>),
}

/// Orders MX records given as `(preference, exchange)`. A `.` exchange beside
/// real ones is ignored (RFC 7505 §3: a null MX must stand alone); a name
/// listed twice is tried once, at its best preference.
pub fn order(records: &[(u16, String)], rng: &mut impl Rng) -> MxPlan {
    let mut hosts: Vec<(u16, String)> = records
        .iter()
        .map(|(pref, name)| (*pref, name.trim_end_matches('.').to_ascii_lowercase()))
        .filter(|(_, name)| !name.is_empty())
        .collect();
    if hosts.is_empty() {
        return MxPlan::NullMx;
    }
    // Shuffle first, then a stable sort by preference: random among equals.
    hosts.shuffle(rng);
    hosts.sort_by_key(|(pref, _)| *pref);
    let mut names: Vec<String> = Vec::with_capacity(hosts.len());
    for (_, name) in hosts {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    MxPlan::Hosts(names)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    fn mx(list: &[(u16, &str)]) -> Vec<(u16, String)> {
        list.iter().map(|(p, n)| (*p, n.to_string())).collect()
    }

    #[test]
    fn lower_preference_comes_first() {
        let mut rng = StdRng::seed_from_u64(1);
        let plan = order(
            &mx(&[
                (20, "b.far.example."),
                (10, "A.far.example."),
                (30, "c.far.example."),
            ]),
            &mut rng,
        );
        assert_eq!(
            plan,
            MxPlan::Hosts(vec![
                "a.far.example".into(),
                "b.far.example".into(),
                "c.far.example".into()
            ])
        );
    }

    #[test]
    fn equal_preferences_are_tried_in_random_order() {
        let records = mx(&[
            (10, "a.example."),
            (10, "b.example."),
            (10, "c.example."),
            (5, "first.example."),
            (50, "last.example."),
        ]);
        let mut seen = HashSet::new();
        for seed in 0..64 {
            let MxPlan::Hosts(hosts) = order(&records, &mut StdRng::seed_from_u64(seed)) else {
                panic!("not a null MX");
            };
            assert_eq!(hosts.len(), 5);
            assert_eq!(hosts[0], "first.example");
            assert_eq!(hosts[4], "last.example");
            seen.insert(hosts[1..4].to_vec());
        }
        // Three hosts have six orders; 64 draws see more than one of them.
        assert!(seen.len() > 1, "always the same order: {seen:?}");
    }

    #[test]
    fn a_lone_dot_is_a_null_mx() {
        let mut rng = StdRng::seed_from_u64(0);
        assert_eq!(order(&mx(&[(0, ".")]), &mut rng), MxPlan::NullMx);
        assert_eq!(order(&mx(&[(0, "")]), &mut rng), MxPlan::NullMx);
        // Beside a real host, the dot is ignored.
        assert_eq!(
            order(&mx(&[(0, "."), (10, "mx.example.")]), &mut rng),
            MxPlan::Hosts(vec!["mx.example".into()])
        );
    }

    #[test]
    fn a_host_listed_twice_is_tried_once() {
        let mut rng = StdRng::seed_from_u64(0);
        assert_eq!(
            order(&mx(&[(20, "mx.example."), (10, "MX.example")]), &mut rng),
            MxPlan::Hosts(vec!["mx.example".into()])
        );
    }
}
