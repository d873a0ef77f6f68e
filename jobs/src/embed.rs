//! The vector store on the lake: embeddings of products, interactions and
//! social captures (the `embeddings` table), kept current, and exact
//! similarity search over them.
//!
//! [`sync`] embeds what changed: each entity's text is hashed with the
//! provider, model and dimensions (`text_hash`); an entity whose latest
//! row has the same hash is skipped, so running it again embeds nothing
//! and writes no rows. A changed text gets a new row and the latest
//! `created_at` wins. The enrich job runs it: products before it matches
//! free text against the catalog, interactions and social captures after
//! it wrote the window's interactions (see [`crate::enrich`]) — as a step
//! of enrich rather than its own scheduled job, because enrich is the only
//! reader that needs the vectors current, and the step costs nothing when
//! nothing changed.
//!
//! What is embedded: a product's `name | brand | category` (not its
//! description: matching is about what people call a product, and a long
//! description pulls its vector away from the name), an interaction's
//! description, a capture's text.
//!
//! [`search`] is exact: it reads the organization's vectors of one kind and
//! model and scores every one (a dot product of normalised vectors). At
//! CROW's scale (a catalog, tens of thousands of posts per organization)
//! that is milliseconds; BENCHMARKS.md measures 100,000 vectors.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use crow_lake::arrow::array::{Array, AsArray, RecordBatch};
use crow_lake::arrow::datatypes::{DataType, Field, Float32Type};
use crow_lake::batch::{batches_to_rows, rows_to_batch, ts_micros};
use crow_lake::datafusion::prelude::SessionContext;
use crow_lake::ids::sha256_hex;
use crow_lake::Lake;
use crow_schemas::EMBEDDINGS;
use serde::{Deserialize, Serialize};

use crate::ai::embed::{embed_all, top_k, Embedder};
use crate::ai::RetryPolicy;
use crate::{Error, Params, Result};

/// Characters of an entity's text kept as its search label.
pub const LABEL_CHARS: usize = 200;
/// Rows per appended batch.
const WRITE_CHUNK: usize = 4096;

/// What an embedding belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A catalog product.
    Product,
    /// An AI-written interaction.
    Interaction,
    /// A captured social post or page.
    SocialCapture,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 3] = [Kind::Product, Kind::Interaction, Kind::SocialCapture];

    /// The name in `embeddings.entity_kind` and in `?kind=`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Product => "product",
            Kind::Interaction => "interaction",
            Kind::SocialCapture => "social_capture",
        }
    }

    /// The kind named `s`.
    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Each entity of the kind: org, id, the text embedded, its label.
    fn source_sql(self) -> &'static str {
        match self {
            Kind::Product => {
                "SELECT org_id, product_id AS id, concat_ws(' | ', name, brand, category) AS text, \
                 name AS label FROM products WHERE TRUE"
            }
            Kind::Interaction => {
                "SELECT org_id, interaction_id AS id, description AS text, description AS label \
                 FROM interactions WHERE description IS NOT NULL AND description <> ''"
            }
            Kind::SocialCapture => {
                "SELECT org_id, capture_id AS id, text, text AS label FROM raw_social_captures \
                 WHERE text IS NOT NULL AND text <> ''"
            }
        }
    }
}

/// What one [`sync`] did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SyncReport {
    /// Entities embedded (new or changed), all kinds.
    pub embedded: u64,
    /// Entities whose vector was current.
    pub unchanged: u64,
}

#[derive(Debug, Deserialize)]
struct Entity {
    org_id: String,
    id: String,
    text: Option<String>,
    label: Option<String>,
}

#[derive(Debug, Serialize)]
struct EmbeddingRow {
    org_id: String,
    entity_kind: &'static str,
    entity_id: String,
    provider: String,
    model: String,
    dims: i32,
    vector: Vec<f32>,
    text_hash: String,
    label: Option<String>,
    #[serde(with = "ts_micros")]
    created_at: DateTime<Utc>,
}

/// The hash that decides whether an entity is embedded again.
fn text_hash(e: &dyn Embedder, text: &str) -> String {
    sha256_hex(format!("{}\u{0}{}\u{0}{}\u{0}{text}", e.name(), e.model(), e.dims()).as_bytes())
}

/// Embed the entities of `kinds` (of `org`, or every organization) whose
/// text changed since their latest embedding with `e`, and append them.
pub async fn sync(
    lake: &Lake,
    e: &dyn Embedder,
    org: Option<&str>,
    kinds: &[Kind],
    policy: RetryPolicy,
) -> Result<SyncReport> {
    let ctx = lake.session().await?;
    let mut report = SyncReport::default();
    let mut rows = Vec::new();
    for kind in kinds {
        let mut params = Params::default();
        let sql = format!(
            "{}{} ORDER BY org_id, id",
            kind.source_sql(),
            params.org("org_id", org)
        );
        let entities: Vec<Entity> =
            batches_to_rows(&params.sql(&ctx, &sql).await?.collect().await?)?;
        let current = current_hashes(&ctx, e, org, *kind).await?;
        let mut todo: Vec<(Entity, String, String)> = Vec::new();
        // What this run embeds already (org, id, hash): a set, so a first run
        // over a long history is linear, not quadratic, in its entities.
        let mut queued: std::collections::HashSet<(String, String, String)> =
            std::collections::HashSet::new();
        for ent in entities {
            let Some(text) = ent.text.clone().filter(|t| !t.trim().is_empty()) else {
                continue;
            };
            let hash = text_hash(e, &text);
            let key = (ent.org_id.clone(), ent.id.clone());
            let seen = current.get(&key).is_some_and(|h| *h == hash)
                || !queued.insert((key.0, key.1, hash.clone()));
            if seen {
                report.unchanged += 1;
            } else {
                todo.push((ent, text, hash));
            }
        }
        let texts: Vec<String> = todo.iter().map(|(_, t, _)| t.clone()).collect();
        let vectors = embed_all(e, &texts, policy).await?;
        let now = Utc::now();
        for ((ent, _, hash), vector) in todo.into_iter().zip(vectors) {
            rows.push(EmbeddingRow {
                org_id: ent.org_id,
                entity_kind: kind.as_str(),
                entity_id: ent.id,
                provider: e.name().to_string(),
                model: e.model().to_string(),
                dims: i32::try_from(e.dims()).unwrap_or(i32::MAX),
                vector,
                text_hash: hash,
                label: ent.label.map(|l| l.chars().take(LABEL_CHARS).collect()),
                created_at: now,
            });
        }
    }
    report.embedded = write(lake, &rows).await?;
    Ok(report)
}

/// Append `rows` in one commit; how many.
async fn write(lake: &Lake, rows: &[EmbeddingRow]) -> Result<u64> {
    if !rows.is_empty() {
        let batches = rows
            .chunks(WRITE_CHUNK)
            .map(|c| rows_to_batch(&EMBEDDINGS, c))
            .collect::<crow_lake::Result<Vec<_>>>()?;
        lake.append(EMBEDDINGS.name, batches).await?;
    }
    Ok(rows.len() as u64)
}

/// Append vectors computed elsewhere (`crow bench search`) as `e`'s, for
/// organization `org`: (entity id, label, vector); `text_hash` is the
/// hash of the id.
pub async fn append_vectors(
    lake: &Lake,
    e: &dyn Embedder,
    org: &str,
    kind: Kind,
    items: Vec<(String, Option<String>, Vec<f32>)>,
) -> Result<u64> {
    let now = Utc::now();
    let rows: Vec<EmbeddingRow> = items
        .into_iter()
        .map(|(id, label, vector)| EmbeddingRow {
            org_id: org.to_string(),
            entity_kind: kind.as_str(),
            text_hash: text_hash(e, &id),
            entity_id: id,
            provider: e.name().to_string(),
            model: e.model().to_string(),
            dims: i32::try_from(e.dims()).unwrap_or(i32::MAX),
            vector,
            label,
            created_at: now,
        })
        .collect();
    write(lake, &rows).await
}

/// The latest `text_hash` of each (org, entity) of `kind` embedded by `e`.
async fn current_hashes(
    ctx: &SessionContext,
    e: &dyn Embedder,
    org: Option<&str>,
    kind: Kind,
) -> Result<HashMap<(String, String), String>> {
    #[derive(Deserialize)]
    struct Latest {
        org_id: String,
        entity_id: String,
        text_hash: String,
    }
    let mut params = Params::default();
    let sql = format!(
        "SELECT org_id, entity_id, text_hash FROM embeddings \
         WHERE entity_kind = {} AND provider = {} AND model = {}{} \
         ORDER BY created_at",
        params.text("kind", kind.as_str()),
        params.text("provider", e.name()),
        params.text("model", e.model()),
        params.org("org_id", org)
    );
    let rows: Vec<Latest> = batches_to_rows(&params.sql(ctx, &sql).await?.collect().await?)?;
    Ok(rows
        .into_iter()
        .map(|r| ((r.org_id, r.entity_id), r.text_hash))
        .collect())
}

/// One organization's vectors of one kind and model, latest per entity.
#[derive(Debug, Clone, Default)]
pub struct VectorSet {
    /// Entity ids.
    pub ids: Vec<String>,
    /// Their labels.
    pub labels: Vec<Option<String>>,
    /// Their vectors (normalised), all of one length.
    pub vectors: Vec<Vec<f32>>,
}

impl VectorSet {
    /// The `k` entities nearest `query`, best first: (index, score).
    pub fn nearest(&self, query: &[f32], k: usize) -> Vec<(usize, f32)> {
        let refs: Vec<&[f32]> = self.vectors.iter().map(Vec::as_slice).collect();
        top_k(query, &refs, k)
    }
}

/// The vectors of `kind` made by `e`, per organization (only `org`'s when
/// given), read through `ctx` (a tenant session reads only its own).
pub async fn load_vectors(
    ctx: &SessionContext,
    e: &dyn Embedder,
    org: Option<&str>,
    kind: Kind,
) -> Result<HashMap<String, VectorSet>> {
    let mut params = Params::default();
    let sql = format!(
        "SELECT org_id, entity_id, label, vector, created_at FROM embeddings \
         WHERE entity_kind = {} AND provider = {} AND model = {}{} \
         ORDER BY org_id, entity_id, created_at",
        params.text("kind", kind.as_str()),
        params.text("provider", e.name()),
        params.text("model", e.model()),
        params.org("org_id", org)
    );
    let batches = params.sql(ctx, &sql).await?.collect().await?;
    let mut out: HashMap<String, VectorSet> = HashMap::new();
    let mut last: Option<(String, String)> = None;
    for b in &batches {
        for r in read_rows(b)? {
            if r.vector.len() != e.dims() {
                continue;
            }
            let set = out.entry(r.org_id.clone()).or_default();
            let key = (r.org_id, r.entity_id);
            // Rows of an entity are adjacent and oldest first: a later one
            // replaces the one before.
            if last.as_ref() == Some(&key) && !set.ids.is_empty() {
                set.labels.pop();
                set.vectors.pop();
                set.ids.pop();
            }
            set.ids.push(key.1.clone());
            set.labels.push(r.label);
            set.vectors.push(r.vector);
            last = Some(key);
        }
    }
    Ok(out)
}

struct VectorRow {
    org_id: String,
    entity_id: String,
    label: Option<String>,
    vector: Vec<f32>,
}

/// The rows of one batch of `load_vectors`' query, read column by column
/// (a JSON round trip of every float would cost more than the search).
fn read_rows(b: &RecordBatch) -> Result<Vec<VectorRow>> {
    let text = |name: &str| -> Result<Vec<Option<String>>> {
        let c = column(b, name)?;
        let c = crow_lake::arrow::compute::cast(c, &DataType::Utf8)?;
        let s = c.as_string::<i32>();
        Ok((0..s.len())
            .map(|i| (!s.is_null(i)).then(|| s.value(i).to_string()))
            .collect())
    };
    let (orgs, ids, labels) = (text("org_id")?, text("entity_id")?, text("label")?);
    let list_type = DataType::List(std::sync::Arc::new(Field::new(
        "item",
        DataType::Float32,
        true,
    )));
    let vectors = crow_lake::arrow::compute::cast(column(b, "vector")?, &list_type)?;
    let vectors = vectors.as_list::<i32>();
    let mut out = Vec::with_capacity(b.num_rows());
    for (i, ((org, id), label)) in orgs.into_iter().zip(ids).zip(labels).enumerate() {
        let (Some(org_id), Some(entity_id)) = (org, id) else {
            return Err(Error::Corrupt(format!(
                "embeddings: row {i} has no org_id or entity_id"
            )));
        };
        if vectors.is_null(i) {
            continue;
        }
        let v = vectors.value(i);
        let vector = v.as_primitive::<Float32Type>().values().to_vec();
        out.push(VectorRow {
            org_id,
            entity_id,
            label,
            vector,
        });
    }
    Ok(out)
}

fn column<'a>(
    b: &'a RecordBatch,
    name: &str,
) -> Result<&'a std::sync::Arc<dyn crow_lake::arrow::array::Array>> {
    b.column_by_name(name)
        .ok_or_else(|| Error::Corrupt(format!("embeddings: no column `{name}` in the answer")))
}

/// One search result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hit {
    /// The entity id (`product_id`, `interaction_id`, `capture_id`).
    pub id: String,
    /// Cosine similarity to the query, -1 to 1.
    pub score: f32,
    /// The product's name, the interaction's description, the capture's
    /// text (at most [`LABEL_CHARS`] characters).
    pub label: Option<String>,
}

/// The `limit` entities of `kind` of organization `org` nearest to the text
/// `q`, best first (exact search over the organization's vectors).
pub async fn search(
    ctx: &SessionContext,
    e: &dyn Embedder,
    org: &str,
    kind: Kind,
    q: &str,
    limit: usize,
    policy: RetryPolicy,
) -> Result<Vec<Hit>> {
    let query = embed_all(e, &[q.to_string()], policy)
        .await?
        .pop()
        .ok_or_else(|| Error::Ai("the embedding provider returned no vector".into()))?;
    let sets = load_vectors(ctx, e, Some(org), kind).await?;
    let Some(set) = sets.get(org) else {
        return Ok(Vec::new());
    };
    Ok(set
        .nearest(&query, limit)
        .into_iter()
        .map(|(i, score)| Hit {
            id: set.ids[i].clone(),
            score,
            label: set.labels[i].clone(),
        })
        .collect())
}
