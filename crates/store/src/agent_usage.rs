//! Token use and cost of a task's model calls: one row per call, and running totals on the
//! task itself (so a task list shows its cost without summing).

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::agent_sql::{check_non_negative, now_ms};
use crate::agent_tasks::task_what;
use crate::{AgentStoreError, Store, StoreError};

/// What one model call used, as the provider counted it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NewUsage {
    /// The provider, e.g. `anthropic`.
    pub provider: String,
    /// The provider's model name.
    pub model: String,
    /// Input tokens billed at the normal rate.
    pub input_tokens: i64,
    /// Output tokens.
    pub output_tokens: i64,
    /// Input tokens written to the prompt cache.
    pub cache_creation_input_tokens: i64,
    /// Input tokens read from the prompt cache.
    pub cache_read_input_tokens: i64,
    /// What the call cost, in US dollars.
    pub cost_usd: f64,
}

/// One stored call's usage.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct UsageRow {
    /// Increasing id.
    pub id: i64,
    /// The task it was for.
    pub task_id: String,
    /// The provider.
    pub provider: String,
    /// The provider's model name.
    pub model: String,
    /// Input tokens billed at the normal rate.
    pub input_tokens: i64,
    /// Output tokens.
    pub output_tokens: i64,
    /// Input tokens written to the prompt cache.
    pub cache_creation_input_tokens: i64,
    /// Input tokens read from the prompt cache.
    pub cache_read_input_tokens: i64,
    /// Cost in US dollars.
    pub cost_usd: f64,
    /// When it was recorded (unix ms).
    pub created_at: i64,
}

/// Sums over calls: of one provider and model ([`Store::usage_by_model`]) or of everything
/// asked for ([`Store::usage_totals`], where `provider` and `model` are empty).
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize)]
pub struct UsageTotals {
    /// The provider (empty in overall totals).
    pub provider: String,
    /// The model (empty in overall totals).
    pub model: String,
    /// How many calls.
    pub calls: i64,
    /// Input tokens billed at the normal rate.
    pub input_tokens: i64,
    /// Output tokens.
    pub output_tokens: i64,
    /// Input tokens written to the prompt cache.
    pub cache_creation_input_tokens: i64,
    /// Input tokens read from the prompt cache.
    pub cache_read_input_tokens: i64,
    /// Cost in US dollars.
    pub cost_usd: f64,
}

/// The sums, cast so both backends decode them as i64 and f64 (PostgreSQL's SUM of BIGINT is
/// NUMERIC).
macro_rules! sums {
    () => {
        "COUNT(*), \
         CAST(COALESCE(SUM(input_tokens), 0) AS BIGINT), \
         CAST(COALESCE(SUM(output_tokens), 0) AS BIGINT), \
         CAST(COALESCE(SUM(cache_creation_input_tokens), 0) AS BIGINT), \
         CAST(COALESCE(SUM(cache_read_input_tokens), 0) AS BIGINT), \
         CAST(COALESCE(SUM(cost_usd), 0) AS DOUBLE PRECISION)"
    };
}

fn totals_from_row(row: &AnyRow, first: usize) -> Result<UsageTotals, sqlx::Error> {
    Ok(UsageTotals {
        provider: String::new(),
        model: String::new(),
        calls: row.try_get(first)?,
        input_tokens: row.try_get(first + 1)?,
        output_tokens: row.try_get(first + 2)?,
        cache_creation_input_tokens: row.try_get(first + 3)?,
        cache_read_input_tokens: row.try_get(first + 4)?,
        cost_usd: row.try_get(first + 5)?,
    })
}

impl NewUsage {
    fn check(&self) -> Result<(), AgentStoreError> {
        if self.provider.is_empty() || self.model.is_empty() {
            return Err(AgentStoreError::invalid(
                format!(
                    "usage with provider {:?} and model {:?}",
                    self.provider, self.model
                ),
                "name both the provider and the model",
            ));
        }
        check_non_negative("input_tokens", self.input_tokens)?;
        check_non_negative("output_tokens", self.output_tokens)?;
        check_non_negative(
            "cache_creation_input_tokens",
            self.cache_creation_input_tokens,
        )?;
        check_non_negative("cache_read_input_tokens", self.cache_read_input_tokens)?;
        if !self.cost_usd.is_finite() || self.cost_usd < 0.0 {
            return Err(AgentStoreError::invalid(
                format!("usage cost {} USD", self.cost_usd),
                "give a cost of zero or more (zero when the price is unknown)",
            ));
        }
        Ok(())
    }
}

impl Store {
    /// Records one model call of a task and adds it to the task's totals (`input_tokens` gets
    /// all three input kinds), in one transaction. A task that does not exist gives
    /// `StoreError::NotFound`.
    pub async fn add_task_usage(
        &self,
        task_id: &str,
        usage: &NewUsage,
    ) -> Result<UsageRow, AgentStoreError> {
        usage.check()?;
        let op = |step: &str| format!("add_task_usage(task {task_id:?}): {step}");
        let now = now_ms();
        let all_input = usage
            .input_tokens
            .saturating_add(usage.cache_creation_input_tokens)
            .saturating_add(usage.cache_read_input_tokens);
        let mut tx = self
            .pool()
            .begin()
            .await
            .map_err(|e| StoreError::query(op("begin"), e))?;
        let done = sqlx::query(
            "UPDATE agent_tasks SET input_tokens = input_tokens + $2, \
             output_tokens = output_tokens + $3, cost_usd = cost_usd + $4, updated_at = $5 \
             WHERE id = $1",
        )
        .bind(task_id.to_owned())
        .bind(all_input)
        .bind(usage.output_tokens)
        .bind(usage.cost_usd)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(|e| StoreError::query(op("totals"), e))?;
        if done.rows_affected() == 0 {
            return Err(AgentStoreError::not_found(task_what(task_id)));
        }
        let row = sqlx::query(
            "INSERT INTO agent_task_usage (task_id, provider, model, input_tokens, output_tokens, \
             cache_creation_input_tokens, cache_read_input_tokens, cost_usd, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
        )
        .bind(task_id.to_owned())
        .bind(usage.provider.clone())
        .bind(usage.model.clone())
        .bind(usage.input_tokens)
        .bind(usage.output_tokens)
        .bind(usage.cache_creation_input_tokens)
        .bind(usage.cache_read_input_tokens)
        .bind(usage.cost_usd)
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| StoreError::query(op("insert"), e))?;
        let id: i64 = row
            .try_get(0)
            .map_err(|e| StoreError::query(op("insert"), e))?;
        tx.commit()
            .await
            .map_err(|e| StoreError::query(op("commit"), e))?;
        Ok(UsageRow {
            id,
            task_id: task_id.to_owned(),
            provider: usage.provider.clone(),
            model: usage.model.clone(),
            input_tokens: usage.input_tokens,
            output_tokens: usage.output_tokens,
            cache_creation_input_tokens: usage.cache_creation_input_tokens,
            cache_read_input_tokens: usage.cache_read_input_tokens,
            cost_usd: usage.cost_usd,
            created_at: now,
        })
    }

    /// A task's usage summed per provider and model, sorted by provider then model. A task
    /// that does not exist gives `StoreError::NotFound`.
    pub async fn usage_by_model(&self, task_id: &str) -> Result<Vec<UsageTotals>, AgentStoreError> {
        let op = || format!("usage_by_model(task {task_id:?})");
        let rows = sqlx::query(concat!(
            "SELECT provider, model, ",
            sums!(),
            " FROM agent_task_usage WHERE task_id = $1 GROUP BY provider, model \
             ORDER BY provider, model"
        ))
        .bind(task_id.to_owned())
        .fetch_all(self.pool())
        .await
        .map_err(|e| StoreError::query(op(), e))?;
        if rows.is_empty() {
            self.require_agent_task(task_id).await?;
        }
        rows.iter()
            .map(|row| {
                let mut totals = totals_from_row(row, 2)?;
                totals.provider = row.try_get(0)?;
                totals.model = row.try_get(1)?;
                Ok(totals)
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(|e| StoreError::query(op(), e).into())
    }

    /// Usage summed over one task's calls, or over every task's with `None`.
    pub async fn usage_totals(
        &self,
        task_id: Option<&str>,
    ) -> Result<UsageTotals, AgentStoreError> {
        let op = || format!("usage_totals(task {task_id:?})");
        let query = match task_id {
            Some(task_id) => sqlx::query(concat!(
                "SELECT ",
                sums!(),
                " FROM agent_task_usage WHERE task_id = $1"
            ))
            .bind(task_id.to_owned()),
            None => sqlx::query(concat!("SELECT ", sums!(), " FROM agent_task_usage")),
        };
        let row = query
            .fetch_one(self.pool())
            .await
            .map_err(|e| StoreError::query(op(), e))?;
        totals_from_row(&row, 0).map_err(|e| StoreError::query(op(), e).into())
    }
}
