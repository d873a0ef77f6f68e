//! The product catalog: upserts by organization and product id.

use chrono::Utc;
use crow_schemas::PRODUCTS;
use serde::{Deserialize, Serialize};

use crate::batch::rows_to_batch;
use crate::{Lake, Result};

/// A product to upsert (timestamps are set by [`upsert`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct Product {
    pub org_id: String,
    pub product_id: String,
    pub sku: Option<String>,
    pub name: String,
    pub url: Option<String>,
    pub category: Option<String>,
    pub brand: Option<String>,
    pub price: Option<f64>,
    pub currency: Option<String>,
    pub description: Option<String>,
    pub image_url: Option<String>,
    pub source: String,
}

#[derive(Serialize)]
struct Row<'a> {
    #[serde(flatten)]
    product: &'a Product,
    created_at: i64,
    updated_at: i64,
}

/// Insert new products and update existing ones (same org and product id).
/// Returns (inserted, updated).
pub async fn upsert(lake: &Lake, products: &[Product]) -> Result<(u64, u64)> {
    let now = Utc::now().timestamp_micros();
    let rows: Vec<Row<'_>> = products
        .iter()
        .map(|product| Row {
            product,
            created_at: now,
            updated_at: now,
        })
        .collect();
    let batch = rows_to_batch(&PRODUCTS, &rows)?;
    lake.merge(PRODUCTS.name, vec![batch], &["org_id", "product_id"])
        .await
}
