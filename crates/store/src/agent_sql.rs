//! Small helpers the agent's tables share: the clock, limits, driver-error classification and
//! a statement built from fixed pieces with numbered placeholders.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::any::AnyArguments;
use sqlx::query::Query;
use sqlx::{Any, AssertSqlSafe};

use crate::AgentStoreError;

/// Unix milliseconds now. Every worker stamps times with its own clock (leases included), so
/// machines sharing a PostgreSQL queue need clocks that agree (NTP) to well within a lease.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A lease length in milliseconds, refusing zero (a lease that is already over).
pub(crate) fn lease_ms(lease: Duration) -> Result<i64, AgentStoreError> {
    let ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
    if ms < 1 {
        return Err(AgentStoreError::invalid(
            format!("a lease of {lease:?} is too short"),
            "give a lease of at least 1 ms (seconds in production)",
        ));
    }
    Ok(ms)
}

/// Checks a page size against `1..=max`.
pub(crate) fn check_limit(what: &str, limit: u32, max: u32) -> Result<i64, AgentStoreError> {
    if limit == 0 || limit > max {
        return Err(AgentStoreError::invalid(
            format!("{what}: limit {limit} is out of range"),
            format!("ask for 1 to {max} rows and page with the cursor"),
        ));
    }
    Ok(i64::from(limit))
}

/// Checks that a count or size is not negative.
pub(crate) fn check_non_negative(what: &str, value: i64) -> Result<(), AgentStoreError> {
    if value < 0 {
        return Err(AgentStoreError::invalid(
            format!("{what} is {value}"),
            "counts and sizes cannot be negative",
        ));
    }
    Ok(())
}

/// True when the driver reported a foreign-key violation (a row names a task that is not
/// there).
pub(crate) fn is_foreign_key_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.kind() == sqlx::error::ErrorKind::ForeignKeyViolation)
}

/// True when the driver reported a duplicate key.
pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.kind() == sqlx::error::ErrorKind::UniqueViolation)
}

/// A value to bind.
#[derive(Debug, Clone)]
pub(crate) enum Arg {
    Text(String),
    Int(i64),
}

/// A statement assembled from fixed SQL pieces (never from input: input only ever goes into
/// [`Sql::arg`], which returns the next `$n` placeholder).
#[derive(Debug, Default)]
pub(crate) struct Sql {
    text: String,
    args: Vec<Arg>,
}

impl Sql {
    pub(crate) fn new(start: &'static str) -> Sql {
        Sql {
            text: start.to_owned(),
            args: Vec::new(),
        }
    }

    /// Appends a fixed piece of SQL.
    pub(crate) fn push(&mut self, piece: &'static str) -> &mut Sql {
        self.text.push_str(piece);
        self
    }

    /// Adds a value and appends its placeholder.
    pub(crate) fn arg(&mut self, value: Arg) -> &mut Sql {
        self.args.push(value);
        self.text.push('$');
        self.text.push_str(&self.args.len().to_string());
        self
    }

    pub(crate) fn query(&self) -> Query<'static, Any, AnyArguments> {
        // Safe to assert: `text` holds only the fixed pieces and `$n` placeholders.
        let mut query = sqlx::query(AssertSqlSafe(self.text.clone()));
        for arg in &self.args {
            query = match arg {
                Arg::Text(s) => query.bind(s.clone()),
                Arg::Int(i) => query.bind(*i),
            };
        }
        query
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_in_order() {
        let mut sql = Sql::new("SELECT 1 WHERE a = ");
        sql.arg(Arg::Int(1))
            .push(" AND b IN (")
            .arg(Arg::Text("x".into()))
            .push(", ")
            .arg(Arg::Text("y".into()))
            .push(")");
        assert_eq!(sql.text, "SELECT 1 WHERE a = $1 AND b IN ($2, $3)");
        assert_eq!(sql.args.len(), 3);
    }

    #[test]
    fn limits_and_leases_are_checked() {
        assert!(check_limit("list", 0, 200).is_err());
        assert!(check_limit("list", 201, 200).is_err());
        assert_eq!(check_limit("list", 200, 200).unwrap(), 200);
        assert!(lease_ms(Duration::from_micros(10)).is_err());
        assert_eq!(lease_ms(Duration::from_millis(300)).unwrap(), 300);
    }
}
