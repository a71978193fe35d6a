//! The summary every run ends with: a two-column table for people, or the
//! report's fields as one JSON object (`--json`) for machines.

use serde::Serialize;

/// One line of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// What was measured.
    pub what: String,
    /// The figure, with its unit.
    pub value: String,
}

impl Row {
    /// A row.
    pub fn new(what: impl Into<String>, value: impl Into<String>) -> Row {
        Row {
            what: what.into(),
            value: value.into(),
        }
    }
}

/// What a run reports.
pub trait Summary: Serialize {
    /// The table's heading (the subcommand and its main parameters).
    fn title(&self) -> String;
    /// The table's rows.
    fn rows(&self) -> Vec<Row>;
}

/// The table: the title, then the rows with their names aligned.
pub fn table(summary: &impl Summary) -> String {
    let rows = summary.rows();
    let width = rows
        .iter()
        .map(|r| r.what.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = format!("{}\n", summary.title());
    for row in rows {
        let pad = width - row.what.chars().count();
        out.push_str(&format!(
            "  {}{}  {}\n",
            row.what,
            " ".repeat(pad),
            row.value
        ));
    }
    out
}

/// The report as one line of JSON.
pub fn json(summary: &impl Summary) -> String {
    serde_json::to_string(summary).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

/// The table, or JSON with `as_json`.
pub fn render(summary: &impl Summary, as_json: bool) -> String {
    if as_json {
        json(summary) + "\n"
    } else {
        table(summary)
    }
}

/// `12,345`: thousands separated, as in the README.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A rate rounded to a whole number, thousands separated.
pub fn rate(per_second: f64) -> String {
    count(per_second.round().max(0.0) as u64)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[derive(Serialize)]
    struct Example {
        accepted: u64,
        errors: crate::stats::ErrorTally,
    }

    impl Summary for Example {
        fn title(&self) -> String {
            "example: 3 messages".into()
        }
        fn rows(&self) -> Vec<Row> {
            vec![
                Row::new("accepted", count(self.accepted)),
                Row::new("errors by reply", self.errors.describe()),
            ]
        }
    }

    fn example() -> Example {
        let mut errors = crate::stats::ErrorTally::default();
        errors.add("451");
        Example {
            accepted: 12345,
            errors,
        }
    }

    #[test]
    fn the_table_aligns_its_rows() {
        assert_eq!(
            table(&example()),
            "example: 3 messages\n  accepted         12,345\n  errors by reply  451 ×1\n"
        );
        assert_eq!(render(&example(), false), table(&example()));
    }

    #[test]
    fn json_has_every_field() {
        let text = render(&example(), true);
        assert!(text.ends_with('\n'));
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"accepted": 12345, "errors": {"451": 1}})
        );
    }

    #[test]
    fn counts_and_rates_read_like_the_readme() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1000), "1,000");
        assert_eq!(count(1234567), "1,234,567");
        assert_eq!(rate(3486.6), "3,487");
        assert_eq!(rate(-1.0), "0");
    }
}
