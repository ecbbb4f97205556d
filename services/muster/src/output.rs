//! How commands print: aligned tables for people, JSON for scripts, and errors as
//! one clear sentence (with the rule and fields a gRPC error names), never a debug dump.

use muster_runtime::status::{field_violations, rule_of};

/// Where a command's result goes.
#[derive(Clone, Copy, Debug)]
pub struct Output {
    /// Print JSON instead of tables.
    pub json: bool,
}

/// A table of rows under headers.
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// An empty table.
    pub fn new(headers: &[&'static str]) -> Self {
        Self { headers: headers.to_vec(), rows: Vec::new() }
    }

    /// Adds a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(cell.chars().count());
                }
            }
        }
        let line = |cells: Vec<String>| {
            let padded: Vec<String> =
                cells.iter().enumerate().map(|(i, c)| format!("{c:<w$}", w = widths[i])).collect();
            padded.join("  ").trim_end().to_string()
        };
        let mut out = vec![line(self.headers.iter().map(|h| h.to_uppercase()).collect())];
        out.extend(self.rows.iter().map(|r| line(r.clone())));
        out.join("\n")
    }
}

impl Output {
    /// Prints `value` as JSON, or `human()` as text.
    pub fn print(&self, value: serde_json::Value, human: impl FnOnce() -> String) {
        use std::io::Write;
        let text = if self.json { serde_json::to_string_pretty(&value).unwrap_or_default() } else { human() };
        // A closed pipe (`muster events watch | head`) is the reader saying it has had enough.
        if writeln!(std::io::stdout().lock(), "{text}").is_err() {
            std::process::exit(0);
        }
    }
}

/// A failed command as a person should read it.
pub fn describe_error(err: &anyhow::Error) -> String {
    if let Some(status) = err.downcast_ref::<tonic::Status>() {
        let mut text = match status.code() {
            tonic::Code::Unavailable => format!("service unavailable: {}", status.message()),
            tonic::Code::Unauthenticated => {
                "not authenticated: pass --token, set MUSTER_TOKEN, or run from the directory holding muster-data/"
                    .to_string()
            }
            tonic::Code::DeadlineExceeded => "the service did not answer in time".to_string(),
            _ => status.message().to_string(),
        };
        if let Some(rule) = rule_of(status)
            && !text.contains(&rule)
        {
            text.push_str(&format!(" (rule: {rule})"));
        }
        for (field, description) in field_violations(status) {
            if !text.contains(&description) {
                text.push_str(&format!("\n  {field}: {description}"));
            }
        }
        return text;
    }
    format!("{err:#}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let mut t = Table::new(&["id", "name"]);
        t.row(vec!["1".into(), "Acme".into()]);
        t.row(vec!["22".into(), "B".into()]);
        assert_eq!(t.render(), "ID  NAME\n1   Acme\n22  B");
    }

    #[test]
    fn errors_name_their_rule() {
        let status =
            muster_runtime::status::rule_status(tonic::Code::InvalidArgument, "agm_requires_jit_or_scim", "mode", "no");
        let text = describe_error(&anyhow::Error::new(status));
        assert_eq!(text, "no (rule: agm_requires_jit_or_scim)");
    }
}
