//! `crow billing report`: monthly invoices from `usage_daily`.

use anyhow::{Context, Result};
use clap::Subcommand;
use crow_jobs::billing::{format_micros, invoices, Prices};
use crow_lake::Lake;
use crow_schemas::config::Config;

use crate::jobs::resolve_org;
use crate::output::Format;
use crate::FormatArg;

#[derive(Debug, Subcommand)]
pub enum BillingCommand {
    /// One invoice per organization for a month: line items (item,
    /// quantity, unit price, amount) and a total, priced with the price
    /// book from usage_daily (run `crow jobs run billing` first).
    Report {
        /// The month, YYYY-MM.
        #[arg(long, value_parser = month)]
        month: String,
        /// Only this organization (id or name).
        #[arg(long)]
        org: Option<String>,
        #[command(flatten)]
        format: FormatArg,
    },
}

/// `--month`, checked where it is parsed (a wrong one is an argument error,
/// exit 2, before the lake is opened).
fn month(s: &str) -> std::result::Result<String, String> {
    crow_jobs::billing::month_range(s)
        .map(|_| s.to_string())
        .map_err(|e| e.to_string())
}

pub async fn run(lake: &Lake, cfg: &Config, cmd: BillingCommand) -> Result<()> {
    let BillingCommand::Report { month, org, format } = cmd;
    lake.prepare().await.context("preparing the lake")?;
    let org = resolve_org(lake, org.as_deref()).await?;
    let prices = Prices::from_config(&cfg.billing)?;
    let invoices = invoices(lake, &month, org.as_deref(), &prices).await?;
    match format.format {
        Format::Json => {
            let v: Vec<serde_json::Value> = invoices
                .iter()
                .map(|i| {
                    let mut v = serde_json::to_value(i).unwrap_or_default();
                    v["total"] = format_micros(i.total_micros).into();
                    if let Some(lines) = v["lines"].as_array_mut() {
                        for l in lines {
                            let unit = l["unit_price_micros"].as_i64().unwrap_or(0);
                            let amount = l["amount_micros"].as_i64().unwrap_or(0);
                            l["unit_price"] = format_micros(unit).into();
                            l["amount"] = format_micros(amount).into();
                        }
                    }
                    v
                })
                .collect();
            crate::output::print_rows(Format::Json, &[], &v)
        }
        Format::Csv => {
            let mut rows = Vec::new();
            for i in &invoices {
                for l in &i.lines {
                    rows.push(serde_json::json!({
                        "org_id": i.org_id, "org_name": i.org_name, "month": i.month,
                        "item": l.item, "quantity": l.quantity, "per": l.per,
                        "unit_price": format_micros(l.unit_price_micros),
                        "amount": format_micros(l.amount_micros), "currency": i.currency,
                    }));
                }
                rows.push(serde_json::json!({
                    "org_id": i.org_id, "org_name": i.org_name, "month": i.month,
                    "item": "total", "amount": format_micros(i.total_micros), "currency": i.currency,
                }));
            }
            crate::output::print_rows(
                Format::Csv,
                &[
                    "org_id",
                    "org_name",
                    "month",
                    "item",
                    "quantity",
                    "per",
                    "unit_price",
                    "amount",
                    "currency",
                ],
                &rows,
            )
        }
        Format::Table => print_table(&invoices, &month),
    }
}

/// Invoices as tables, one per organization.
pub fn print_table(invoices: &[crow_jobs::billing::Invoice], month: &str) -> Result<()> {
    if invoices.is_empty() {
        crate::output::line(format!(
            "No usage in {month} (has `crow jobs run billing` run over it?)."
        ))?;
    }
    for i in invoices {
        crate::output::line(format!(
            "Invoice {} for {} ({}), {} days with usage, {} sessions metered",
            i.month,
            i.org_name.as_deref().unwrap_or("?"),
            i.org_id,
            i.days,
            i.usage.sessions
        ))?;
        let mut rows: Vec<serde_json::Value> = i
            .lines
            .iter()
            .map(|l| {
                serde_json::json!({
                    "item": l.item,
                    "quantity": l.quantity,
                    "unit_price": if l.per == 1 {
                        format!("{} {}", format_micros(l.unit_price_micros), i.currency)
                    } else {
                        format!("{} {} per {}", format_micros(l.unit_price_micros), i.currency, l.per)
                    },
                    "amount": format!("{} {}", format_micros(l.amount_micros), i.currency),
                })
            })
            .collect();
        rows.push(serde_json::json!({
            "item": "total",
            "amount": format!("{} {}", format_micros(i.total_micros), i.currency),
        }));
        crate::output::print_rows(
            Format::Table,
            &["item", "quantity", "unit_price", "amount"],
            &rows,
        )?;
        crate::output::line("")?;
    }
    Ok(())
}
