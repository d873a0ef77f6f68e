//! `crow ask "QUESTION" --org ORG`: the query API's ask pipeline, in
//! process: the configured AI provider writes the SQL, which runs in the
//! organization's tenant session with the API's limits.

use anyhow::{anyhow, Result};
use crow_lake::Lake;
use crow_schemas::config::Config;

use crate::output::{self, Format};

/// Answer `question` about `org` (id or name).
pub async fn run(
    lake: &Lake,
    cfg: &Config,
    org: &str,
    question: &str,
    format: Format,
) -> Result<()> {
    let org = crate::orgs::resolve(lake, org).await?;
    let st = crow_query_api::ApiState::new(lake.clone(), cfg.api.clone())
        .map_err(|e| anyhow!("starting the query engine: {e}"))?;
    st.set_ai(crow_jobs::ai::from_config(&cfg.ai)?);
    let p = crow_query_api::auth::Principal {
        org_id: org.org_id,
        key_id: "cli".to_string(),
        scope: crow_query_api::keys::Scope::Read,
        user: None,
    };
    let req = crow_query_api::ask::AskRequest {
        question: question.to_string(),
        conversation: Vec::new(),
    };
    let a = crow_query_api::ask::ask(&st, &p, &req)
        .await
        .map_err(|e| anyhow!("{} ({})", e.detail, e.code))?;
    if format == Format::Json {
        return output::text(&format!("{}\n", serde_json::to_string_pretty(&a)?));
    }
    output::line(&a.answer)?;
    for (i, step) in a.steps.iter().enumerate() {
        output::line(format!(
            "\nStep {}: {}\nSQL: {}\n",
            i + 1,
            step.question,
            step.sql
        ))?;
        match &step.error {
            Some(e) => output::line(format!("(failed: {})", e["detail"].as_str().unwrap_or("")))?,
            None => {
                let columns: Vec<&str> = step.columns.iter().map(String::as_str).collect();
                output::print_rows(format, &columns, &step.rows)?;
            }
        }
    }
    if !a.steps.is_empty() {
        return Ok(());
    }
    output::line(format!("\nSQL: {}\n", a.sql))?;
    let columns: Vec<String> = a
        .rows
        .first()
        .and_then(|r| r.as_object())
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    let columns: Vec<&str> = columns.iter().map(String::as_str).collect();
    output::print_rows(format, &columns, &a.rows)?;
    if a.truncated {
        output::line(format!("(only the first {} rows are shown)", a.rows.len()))?;
    }
    Ok(())
}
